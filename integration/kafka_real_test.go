package integration

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

const kafkaImage = "apache/kafka:3.9.1"

// startRealKafka runs Apache Kafka (KRaft, one node) in Docker and returns
// its address. It advertises the address of a test proxy that forwards to
// the container's mapped port, since that port is known only after start.
// It skips when no Docker engine is reachable.
func startRealKafka(t *testing.T) string {
	t.Helper()
	if err := dockerHealthy(); err != nil {
		t.Skipf("no Docker engine reachable, so real Apache Kafka (%s) cannot be started: %v", kafkaImage, err)
	}
	px := newProxy(t)
	ctx := context.Background()
	c, err := testcontainers.Run(ctx, kafkaImage,
		testcontainers.WithExposedPorts("9092/tcp"),
		testcontainers.WithEnv(map[string]string{
			"KAFKA_NODE_ID":                                  "1",
			"KAFKA_PROCESS_ROLES":                            "broker,controller",
			"KAFKA_LISTENERS":                                "PLAINTEXT://:9092,CONTROLLER://:9093",
			"KAFKA_ADVERTISED_LISTENERS":                     "PLAINTEXT://" + px.addr,
			"KAFKA_CONTROLLER_LISTENER_NAMES":                "CONTROLLER",
			"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":           "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
			"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@localhost:9093",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
			"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":         "0",
		}),
		testcontainers.WithWaitStrategyAndDeadline(3*time.Minute, wait.ForLog("Kafka Server started")),
	)
	testcontainers.CleanupContainer(t, c)
	if err != nil {
		t.Fatalf("starting %s: %v", kafkaImage, err)
	}
	addr, err := c.PortEndpoint(ctx, "9092/tcp", "")
	if err != nil {
		t.Fatalf("mapped port of %s: %v", kafkaImage, err)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		t.Fatalf("endpoint %q: %v", addr, err)
	}
	px.mu.Lock()
	px.target = addr
	px.mu.Unlock()
	return px.addr
}

func dockerHealthy() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers panicked: %v", r)
		}
	}()
	provider, err := testcontainers.ProviderDefault.GetProvider()
	if err != nil {
		return err
	}
	defer provider.Close()
	return provider.Health(context.Background())
}

// TestKafkaRealApacheKafka runs one source and two sinks against a real
// Apache Kafka broker (skipped where no Docker engine runs).
func TestKafkaRealApacheKafka(t *testing.T) {
	broker := startRealKafka(t)
	e := sharedEnv(t)
	e.kafkaEnv([]string{broker}, "bs-real")
	e.exec(usersDDL)
	src := e.startRole("source")
	sink1 := e.startRole("sink")
	sink2 := e.startRole("sink")
	load := startLoad(e, 3)
	time.Sleep(3 * time.Second)
	sink1.kill9(t)
	time.Sleep(2 * time.Second)
	txs := load.finish(t)
	e.waitSame("users", 120*time.Second, nil, "id")
	t.Logf("%d transactions through real Kafka; Redis equals MySQL", txs)
	checkKcat(t, e, broker, "bs-real")
	for _, p := range []*proc{src, sink2} {
		if code := p.stop(t, 30*time.Second); code != 0 {
			t.Fatalf("exit code %d", code)
		}
	}
}
