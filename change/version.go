package change

import (
	"encoding/hex"
	"fmt"
)

// Version totally orders the changes of one source (SPEC section 3).
//
// It is the failover epoch, then the position in the binlog of the start of
// the change's transaction (file sequence number and byte offset), then the
// change's 1-based sequence number inside that transaction. Using the
// transaction's start rather than the event's own offset keeps versions
// well-defined for events inside compressed transaction payloads (MySQL 8),
// whose inner events carry no offset of their own.
//
// A snapshot taken at a transaction boundary B is given the version
// {Epoch, File(B), Pos(B), 0}: newer than every change of a transaction that
// ended at or before B, older than every change of a transaction that starts
// at B or later. The reconciler's repairs rely on this.
type Version struct {
	Epoch uint16
	File  uint32
	Pos   uint32
	Seq   uint32
}

// VersionLen is the length of a version's text form.
const VersionLen = 28

// Less reports whether v is older than o.
func (v Version) Less(o Version) bool {
	if v.Epoch != o.Epoch {
		return v.Epoch < o.Epoch
	}
	if v.File != o.File {
		return v.File < o.File
	}
	if v.Pos != o.Pos {
		return v.Pos < o.Pos
	}
	return v.Seq < o.Seq
}

// IsZero reports whether v is the zero version.
func (v Version) IsZero() bool { return v == Version{} }

// AppendText appends the text form of v: 28 lower-case hex digits (epoch 4,
// file 8, position 8, sequence 8). Text forms compare byte-wise in the same
// order as Less, which is what the Redis scripts rely on.
func (v Version) AppendText(dst []byte) []byte {
	var b [14]byte
	b[0], b[1] = byte(v.Epoch>>8), byte(v.Epoch)
	put32(b[2:], v.File)
	put32(b[6:], v.Pos)
	put32(b[10:], v.Seq)
	return hex.AppendEncode(dst, b[:])
}

func (v Version) String() string { return string(v.AppendText(make([]byte, 0, VersionLen))) }

// ParseVersion parses the text form of a version.
func ParseVersion(s string) (Version, error) {
	if len(s) != VersionLen {
		return Version{}, fmt.Errorf("parsing version %q: want %d hex digits", s, VersionLen)
	}
	var b [14]byte
	if _, err := hex.Decode(b[:], []byte(s)); err != nil {
		return Version{}, fmt.Errorf("parsing version %q: %w", s, err)
	}
	return Version{
		Epoch: uint16(b[0])<<8 | uint16(b[1]),
		File:  get32(b[2:]),
		Pos:   get32(b[6:]),
		Seq:   get32(b[10:]),
	}, nil
}

func put32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

func get32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// FileSeq returns the numeric suffix of a binlog file name such as
// "mysql-bin.000042" (42), which orders the files of one server.
func FileSeq(name string) (uint32, error) {
	i := len(name)
	for i > 0 && name[i-1] >= '0' && name[i-1] <= '9' {
		i--
	}
	if i == len(name) || i == 0 || name[i-1] != '.' {
		return 0, fmt.Errorf("binlog file name %q has no numeric extension", name)
	}
	var n uint64
	for _, c := range name[i:] {
		n = n*10 + uint64(c-'0')
		if n > 1<<32-1 {
			return 0, fmt.Errorf("binlog file name %q: sequence number out of range", name)
		}
	}
	return uint32(n), nil
}
