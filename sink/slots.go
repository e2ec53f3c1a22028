package sink

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// SlotMap knows which master of a Redis Cluster serves each slot, so that one script call can hold keys of every
// slot of a master. Scripts flagged allow-cross-slot-keys (Redis 7.0) may read and write keys of any slot their
// node serves, though the keys they declare must share one slot: such calls pass their keys in ARGV and declare
// one of them to route the call. Keys spread over the 16384 slots, so calls of one slot hold about one key each,
// and the per-call cost of a script is then most of Redis's work.
//
// The map is read from CLUSTER SLOTS at most every slotMapTTL. When a call finds it stale (a slot moved:
// resharding, failover), Forget drops it and calls hold keys of one slot for slotMapPause; when Redis refuses
// the flagged script itself (before 7.0), for good. The zero value is ready to use.
type SlotMap struct {
	mu      sync.Mutex
	owners  []uint16
	at      time.Time
	pause   time.Time // until when Owners returns nil
	refused bool
}

const (
	slotMapTTL   = 10 * time.Second
	slotMapPause = time.Second
)

// Owners returns the master (numbered from 0) of each slot, or nil when calls are to hold keys of one slot: rdb
// is not a cluster, CLUSTER SLOTS failed or left slots unserved, or the map was just found stale.
func (m *SlotMap) Owners(ctx context.Context, rdb redis.UniversalClient) []uint16 {
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if m.refused || now.Before(m.pause) {
		return nil
	}
	if m.owners != nil && now.Sub(m.at) < slotMapTTL {
		return m.owners
	}
	m.owners, m.pause = nil, now.Add(slotMapPause) // unless the read below succeeds
	slots, err := rdb.ClusterSlots(ctx).Result()
	if err != nil {
		return nil
	}
	owners := make([]uint16, SlotCount)
	ids := map[string]uint16{}
	covered := 0
	for _, s := range slots {
		if len(s.Nodes) == 0 || s.Start < 0 || s.End >= SlotCount || s.Start > s.End {
			continue
		}
		id := s.Nodes[0].ID
		if id == "" {
			id = s.Nodes[0].Addr
		}
		n, ok := ids[id]
		if !ok {
			n = uint16(len(ids))
			ids[id] = n
		}
		for i := s.Start; i <= s.End; i++ {
			owners[i] = n
		}
		covered += int(s.End - s.Start + 1)
	}
	if covered != SlotCount {
		return nil
	}
	m.owners, m.at, m.pause = owners, now, time.Time{}
	return owners
}

// Forget drops the map after a call of a master's keys failed with err; when Redis refused the flagged script
// (ERR loading it), calls hold keys of one slot from now on.
func (m *SlotMap) Forget(err error, loading bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.owners, m.pause = nil, time.Now().Add(slotMapPause)
	var rerr redis.Error
	if loading && errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "ERR") {
		m.refused = true
	}
}

// Current returns the map Owners last read, without reading it (tests).
func (m *SlotMap) Current() []uint16 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.owners
}

// Set replaces the map as if Owners had just read it (tests).
func (m *SlotMap) Set(owners []uint16) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.owners, m.at, m.pause = owners, time.Now(), time.Time{}
}
