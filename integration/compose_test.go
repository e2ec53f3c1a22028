package integration

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/binlogsync/binlogsync/config"
)

// No Docker engine runs here, so docker-compose.yml and the Dockerfile are
// checked statically: the services exist, the servers are configured as
// binlogsync needs, and every binlogsync service's environment is a valid
// configuration whose addresses point at services of the file.
func TestComposeFileAgreesWithConfig(t *testing.T) {
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Build       any               `yaml:"build"`
			Command     any               `yaml:"command"`
			Entrypoint  []string          `yaml:"entrypoint"`
			Environment map[string]string `yaml:"environment"`
			Ports       []string          `yaml:"ports"`
			DependsOn   map[string]any    `yaml:"depends_on"`
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("parsing docker-compose.yml: %v", err)
	}
	for _, name := range []string{"mysql", "kafka", "redis", "binlogsync-source", "binlogsync-sink-1", "binlogsync-sink-2", "reconciler"} {
		if _, ok := doc.Services[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	my := doc.Services["mysql"]
	if !strings.HasPrefix(my.Image, "mysql:8.4") {
		t.Errorf("mysql image %q, want mysql:8.4", my.Image)
	}
	cmd := fmt.Sprint(my.Command)
	for _, flag := range []string{"--binlog-format=ROW", "--binlog-row-image=FULL", "--gtid-mode=ON", "--enforce-gtid-consistency=ON"} {
		if !strings.Contains(cmd, flag) {
			t.Errorf("mysql command lacks %s", flag)
		}
	}
	if k := doc.Services["kafka"]; !strings.Contains(k.Environment["KAFKA_PROCESS_ROLES"], "controller") {
		t.Errorf("kafka must run in KRaft mode (KAFKA_PROCESS_ROLES with controller)")
	}
	if r := doc.Services["redis"]; !strings.HasPrefix(r.Image, "redis:7") {
		t.Errorf("redis image %q, want redis:7", r.Image)
	}

	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := string(df)
	probePort := regexp.MustCompile(`--healthcheck", "http://127\.0\.0\.1:(\d+)/readyz"`)
	imageProbe := probePort.FindStringSubmatch(d)
	if imageProbe == nil {
		t.Fatalf("the Dockerfile's HEALTHCHECK does not probe /readyz on a loopback port")
	}

	roles := map[string]int{}
	for name, svc := range doc.Services {
		if !strings.HasPrefix(name, "binlogsync") && name != "reconciler" {
			continue
		}
		if svc.Build == nil {
			t.Errorf("%s should build the Dockerfile", name)
		}
		var env []string
		for k, v := range svc.Environment {
			env = append(env, k+"="+v)
		}
		sort.Strings(env)
		cfg, err := config.Load("", env)
		if err != nil {
			t.Errorf("%s: environment is not a valid configuration: %v", name, err)
			continue
		}
		if name != "reconciler" {
			roles[cfg.Role]++
			if cfg.Transport.Kind != "kafka" {
				t.Errorf("%s: transport.kind = %s, want kafka", name, cfg.Transport.Kind)
			}
		}
		for _, addr := range append([]string{cfg.MySQL.Addr, cfg.Redis.Addr}, cfg.Kafka.Brokers...) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				t.Errorf("%s: bad address %q", name, addr)
				continue
			}
			if _, ok := doc.Services[host]; !ok {
				t.Errorf("%s: address %s names no service of the compose file", name, addr)
			}
		}
		if cfg.Kafka.Brokers[0] != "kafka:9092" || !strings.Contains(doc.Services["kafka"].Environment["KAFKA_ADVERTISED_LISTENERS"], "kafka:9092") {
			t.Errorf("%s: kafka.brokers %v does not match the broker's advertised listener", name, cfg.Kafka.Brokers)
		}
		listen := cfg.HTTP.Addr
		if name == "reconciler" {
			listen = cfg.Reconcile.HTTPAddr
		}
		_, port, _ := net.SplitHostPort(listen)
		published := false
		for _, p := range svc.Ports {
			if strings.HasSuffix(p, ":"+port) {
				published = true
			}
		}
		if !published {
			t.Errorf("%s: listens on %s but publishes %v", name, listen, svc.Ports)
		}
		// The health check (the service's own, else the image's) probes the port the process listens on.
		probe := imageProbe[1]
		if len(svc.Healthcheck.Test) > 0 {
			m := probePort.FindStringSubmatch(`"` + strings.Join(svc.Healthcheck.Test, `", "`) + `"`)
			if m == nil {
				t.Errorf("%s: health check %v does not probe /readyz on a loopback port", name, svc.Healthcheck.Test)
				continue
			}
			probe = m[1]
		}
		if probe != port {
			t.Errorf("%s: listens on port %s, its health check probes port %s", name, port, probe)
		}
	}
	if roles["source"] != 1 || roles["sink"] != 2 {
		t.Errorf("want one source and two sinks, got %v", roles)
	}

	if strings.Count(d, "\nFROM ") < 1 || strings.Count(d, "FROM ") < 2 {
		t.Errorf("Dockerfile should be multi-stage")
	}
	for _, want := range []string{"CGO_ENABLED=0", "USER 65532", "HEALTHCHECK", "/readyz", "./cmd/reconciler"} {
		if !strings.Contains(d, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
