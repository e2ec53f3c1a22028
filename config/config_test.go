package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const examplePath = "../config.example.yaml"

// writeFile writes content into a fresh temporary file and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustLoad(t *testing.T, yamlText string, environ ...string) *Config {
	t.Helper()
	c, err := load("config.yaml", []byte(yamlText), environ)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return c
}

func TestDefaults(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"role", c.Role, RoleAll},
		{"mysql.addr", c.MySQL.Addr, "127.0.0.1:3306"},
		{"mysql.server_id", c.MySQL.ServerID, DefaultServerID(host)},
		{"redis.addr", c.Redis.Addr, "127.0.0.1:6379"},
		{"tables.include", c.Tables.Include, []string{"*.*"}},
		{"sink.batch_wait", c.Sink.BatchWait, 2 * time.Millisecond},
		{"checkpoint.store", c.Checkpoint.Store, StoreFile},
		{"transport.kind", c.Transport.Kind, TransportEmbedded},
		{"http.addr", c.HTTP.Addr, "127.0.0.1:9090"},
		{"reconcile.repair", c.Reconcile.Repair, true},
		{"kafka.compression", c.Kafka.Compression, "snappy"},
		{"kafka.required_acks", c.Kafka.RequiredAcks, "all"},
		{"kafka.batch_timeout", c.Kafka.BatchTimeout, 2 * time.Millisecond}, // not kafka-go's 1s
		{"kafka.max_unacknowledged", c.Kafka.MaxUnacknowledged, 16384},
		{"kafka.commit_interval", c.Kafka.CommitInterval, 100 * time.Millisecond},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
}

// TestExampleLoads checks that config.example.yaml validates, and that the
// values it shows are the defaults (apart from its illustrative rule).
func TestExampleLoads(t *testing.T) {
	ex, err := Load(examplePath, nil)
	if err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	if len(ex.Tables.Rules) != 1 || ex.Tables.Rules[0].Columns.Rename["full_name"] != "name" {
		t.Fatalf("example rule not loaded: %+v", ex.Tables.Rules)
	}
	def, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	ex.Tables.Rules = nil
	if got, want := ex.Redacted(), def.Redacted(); got != want {
		t.Errorf("config.example.yaml does not show the defaults:\n--- example\n%s\n--- defaults\n%s", got, want)
	}
}

// exampleKeys collects the key paths set in a YAML node, with "[]" for the
// entries of a list of mappings.
func exampleKeys(n *yaml.Node, prefix string, out map[string]bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		exampleKeys(n.Content[0], prefix, out)
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := join(prefix, n.Content[i].Value)
			v := n.Content[i+1]
			if v.Kind == yaml.MappingNode && !strings.HasSuffix(p, ".rename") {
				exampleKeys(v, p, out)
				continue
			}
			if v.Kind == yaml.SequenceNode && len(v.Content) > 0 && v.Content[0].Kind == yaml.MappingNode {
				for _, item := range v.Content {
					exampleKeys(item, p+"[]", out)
				}
				continue
			}
			out[p] = true
		}
	}
}

func TestExampleCoversEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	exampleKeys(&doc, "", present)
	all := leaves(reflect.TypeOf(Config{}), "", nil)
	if len(all) < 90 {
		t.Fatalf("only %d leaf keys found; the reflection walk is broken", len(all))
	}
	for _, l := range all {
		if !present[l.path] {
			t.Errorf("config.example.yaml does not show key %s", l.path)
		}
	}
}

func TestEnvNamesAreUnique(t *testing.T) {
	idx, err := envIndex()
	if err != nil {
		t.Fatal(err)
	}
	if idx["BINLOGSYNC_MYSQL_ADDR"].path != "mysql.addr" || idx["BINLOGSYNC_KAFKA_SASL_PASSWORD_FILE"].path != "kafka.sasl.password_file" {
		t.Fatalf("SPEC names missing from the index")
	}
}

func TestEnvOverrides(t *testing.T) {
	file := "mysql:\n  addr: db.example:3306\n  heartbeat: 2s\ntables:\n  include: [a.b]\n"
	c := mustLoad(t, file,
		"PATH=/usr/bin",                   // not ours
		"binlogsync_mysql_addr=ignored:1", // names are case-sensitive
		"BINLOGSYNC_MYSQL_ADDR=10.0.0.5:3307",
		"BINLOGSYNC_MYSQL_SERVER_ID=4242",
		"BINLOGSYNC_MYSQL_HEARTBEAT=500ms",
		"BINLOGSYNC_MYSQL_TLS_MODE=required",
		"BINLOGSYNC_MYSQL_START_GTID_SET=3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5",
		"BINLOGSYNC_TABLES_INCLUDE= shop.* , crm.users,",
		"BINLOGSYNC_TABLES_EXCLUDE=",
		"BINLOGSYNC_BOOTSTRAP=true",
		"BINLOGSYNC_REDIS_DB=3",
		"BINLOGSYNC_KAFKA_SASL_MECHANISM=plain",
		"BINLOGSYNC_KAFKA_SASL_USER=u",
		"BINLOGSYNC_KAFKA_SASL_PASSWORD=p",
		"BINLOGSYNC_SINK_TOMBSTONE_TTL=1h30m",
	)
	checks := []struct {
		name      string
		got, want any
	}{
		{"mysql.addr", c.MySQL.Addr, "10.0.0.5:3307"},
		{"mysql.server_id", c.MySQL.ServerID, uint32(4242)},
		{"mysql.heartbeat", c.MySQL.Heartbeat, 500 * time.Millisecond},
		{"mysql.tls.mode", c.MySQL.TLS.Mode, TLSRequired},
		{"mysql.start.gtid_set", c.MySQL.Start.GTIDSet, "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5"},
		{"tables.include", c.Tables.Include, []string{"shop.*", "crm.users"}},
		{"tables.exclude", len(c.Tables.Exclude), 0},
		{"bootstrap", c.Bootstrap, true},
		{"redis.db", c.Redis.DB, 3},
		{"kafka.sasl.user", c.Kafka.SASL.User, "u"},
		{"sink.tombstone_ttl", c.Sink.TombstoneTTL, 90 * time.Minute},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
}

func TestEnvErrors(t *testing.T) {
	cases := []struct {
		env  string
		want []string
	}{
		{"BINLOGSYNC_MYSQL_ADRESS=x", []string{"BINLOGSYNC_MYSQL_ADRESS matches no config key", "did you mean BINLOGSYNC_MYSQL_ADDR?"}},
		{"BINLOGSYNC_MYSLQ_ADDR=x", []string{"BINLOGSYNC_MYSLQ_ADDR matches no config key", "did you mean BINLOGSYNC_MYSQL_ADDR?"}},
		{"BINLOGSYNC_NOTHING_LIKE_IT=1", []string{"BINLOGSYNC_NOTHING_LIKE_IT matches no config key; fix its name or unset it"}},
		{"BINLOGSYNC_MYSQL_TLS=on", []string{"BINLOGSYNC_MYSQL_TLS names the section mysql.tls"}},
		{"BINLOGSYNC_TABLES_RULES=x", []string{"tables.rules can only be set in the config file"}},
		{"BINLOGSYNC_MYSQL_SERVER_ID=-1", []string{"BINLOGSYNC_MYSQL_SERVER_ID (mysql.server_id)", "want an integer in [0, 4294967295]"}},
		{"BINLOGSYNC_MYSQL_HEARTBEAT=5", []string{"BINLOGSYNC_MYSQL_HEARTBEAT (mysql.heartbeat)", `want a duration like "500ms"`}},
		{"BINLOGSYNC_BOOTSTRAP=yes please", []string{"BINLOGSYNC_BOOTSTRAP (bootstrap)", "want true or false"}},
		// A value that parses but fails validation names the variable.
		{"BINLOGSYNC_MYSQL_FLAVOR=postgres", []string{"environment variable BINLOGSYNC_MYSQL_FLAVOR: mysql.flavor is \"postgres\"; set it to one of: auto, mysql, mariadb"}},
	}
	for _, tc := range cases {
		t.Run(tc.env, func(t *testing.T) {
			_, err := load("", nil, []string{tc.env})
			assertErr(t, err, tc.want...)
		})
	}
}

func assertErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q\n  does not contain %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q spans several lines; want one message", err)
	}
}

// TestFileErrors covers decoding errors: each names the line and key path.
func TestFileErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", "mysql:\n  addr: x:1\n  adress: y\n", []string{`config.yaml line 3: unknown key "mysql.adress" (did you mean "mysql.addr"?)`}},
		{"unknown top key", "mysqll: {}\n", []string{`line 1: unknown key "mysqll" (did you mean "mysql"?)`}},
		{"key in wrong section", "mysql:\n  brokers: [a:1]\n", []string{`unknown key "mysql.brokers" (did you mean "kafka.brokers"?)`}},
		{"unknown key no suggestion", "zzzzzzzz: 1\n", []string{`line 1: unknown key "zzzzzzzz"`}},
		{"unknown key in rule", "tables:\n  rules:\n    - match: a.b\n      tll: 1s\n", []string{`line 4: unknown key "tables.rules[0].tll" (did you mean "tables.rules[0].ttl"?)`}},
		{"int type", "mysql:\n  server_id: abc\n", []string{`line 2: mysql.server_id: want an integer in [0, 4294967295], got "abc"`}},
		{"uint overflow", "mysql:\n  server_id: 5000000000\n", []string{`mysql.server_id: want an integer in [0, 4294967295]`}},
		{"duration type", "mysql:\n  heartbeat: 5\n", []string{`line 2: mysql.heartbeat: want a duration like "500ms"`}},
		{"bool type", "bootstrap: maybe\n", []string{`line 1: bootstrap: want true or false, got "maybe"`}},
		{"int empty quoted", "redis:\n  db: \"\"\n", []string{`line 2: redis.db: want an integer, got an empty string`}},
		{"list wanted", "tables:\n  include: \"*.*\"\n", []string{`line 2: tables.include: want a list like [a, b], got "*.*"`}},
		{"list of scalars", "tables:\n  include: [[a]]\n", []string{`tables.include[0]: want a string, got a list`}},
		{"mapping wanted", "mysql: 3306\n", []string{`line 1: mysql: want a mapping of keys, got "3306"`}},
		{"scalar wanted", "role: [all]\n", []string{`line 1: role: want a string, got a list`}},
		{"rules list wanted", "tables:\n  rules: {match: a.b}\n", []string{`tables.rules: want a list, got a mapping`}},
		{"rename mapping wanted", "tables:\n  rules:\n    - match: a.b\n      columns:\n        rename: [a]\n", []string{`line 5: tables.rules[0].columns.rename: want a mapping like {old: new}`}},
		{"duplicate key", "role: all\nmysql: {}\nrole: sink\n", []string{`line 3: key "role" is set twice (first on line 1); keep one`}},
		{"second document", "role: all\n---\nrole: sink\n", []string{`a second YAML document`}},
		{"tabs", "mysql:\n\taddr: x\n", []string{`parsing config.yaml`, `indent with spaces, not tabs`}},
		{"merge key", "base: &b {addr: x:1}\nmysql:\n  <<: *b\n", []string{`unknown key "base"`}},
		{"merge key in section", "mysql:\n  <<: {addr: x:1}\n", []string{`line 2: mysql: YAML merge keys (<<) are not supported`}},
		{"root not mapping", "- a\n", []string{`line 1: the configuration: want a mapping of keys, got a list`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load("config.yaml", []byte(tc.yaml), nil)
			assertErr(t, err, tc.want...)
		})
	}
}

// TestValidationErrors covers every validation rule; each message names the
// key and, for values from the file, its line.
func TestValidationErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"role", "role: both\n", []string{`config.yaml line 1: role is "both"; set it to one of: all, source, sink`}},
		{"restore_expired without ttl", "tables:\n  rules:\n    - match: a.b\n      restore_expired: true\n", []string{`tables.rules[0].restore_expired is set but tables.rules[0].ttl is 0s`}},
		{"reconcile_interval negative", "tables:\n  rules:\n    - match: a.b\n      reconcile_interval: -1s\n", []string{`tables.rules[0].reconcile_interval is -1s; it must not be negative`}},
		{"full_every negative", "reconcile:\n  full_every: -1h\n", []string{`reconcile.full_every is -1h; it must not be negative`}},
		{"hash_rows", "reconcile:\n  hash_rows: lua\n", []string{`line 2: reconcile.hash_rows is "lua"; set it to one of: reconciler, redis`}},
		{"role needs kafka", "role: sink\n", []string{`line 1: role sink runs only half of the pipeline`, `set transport.kind: kafka`}},
		{"kafka needs brokers", "transport:\n  kind: kafka\n", []string{`kafka.brokers is empty; list the brokers`}},
		{"transport kind", "transport:\n  kind: nats\n", []string{`line 2: transport.kind is "nats"; set it to one of: embedded, kafka`}},
		{"shutdown timeout", "shutdown_timeout: 0s\n", []string{`shutdown_timeout is 0s; it must be a positive duration`}},
		{"mysql addr empty", "mysql:\n  addr: \"\"\n", []string{`mysql.addr is empty`}},
		{"mysql addr no port", "mysql:\n  addr: localhost\n", []string{`mysql.addr "localhost" is not host:port`, `"127.0.0.1:3306"`}},
		{"mysql user", "mysql:\n  user: \"\"\n", []string{`mysql.user is empty; set it to a user with REPLICATION SLAVE`}},
		{"flavor", "mysql:\n  flavor: percona\n", []string{`mysql.flavor is "percona"; set it to one of: auto, mysql, mariadb`}},
		{"gtid", "mysql:\n  gtid: yes\n", []string{`mysql.gtid is "yes"; set it to one of: auto, on, off`}},
		{"read timeout vs heartbeat", "mysql:\n  heartbeat: 30s\n", []string{`mysql.read_timeout (30s) must be greater than mysql.heartbeat (30s)`}},
		{"negative heartbeat", "mysql:\n  heartbeat: -1s\n", []string{`mysql.heartbeat is -1s; it must be a positive duration`}},
		{"tls mode", "mysql:\n  tls:\n    mode: on\n", []string{`line 3: mysql.tls.mode is "on"; set it to one of: disabled, preferred, required, verify-ca, verify-identity`}},
		{"tls file without mode", "mysql:\n  tls:\n    ca_file: /ca.pem\n", []string{`line 3: mysql.tls.ca_file is set but mysql.tls.mode is disabled`}},
		{"verify-ca needs ca", "mysql:\n  tls:\n    mode: verify-ca\n", []string{`mysql.tls.mode verify-ca needs mysql.tls.ca_file`}},
		{"tls cert without key", "mysql:\n  tls:\n    mode: required\n    cert_file: /c.pem\n", []string{`mysql.tls.cert_file is set without key_file`}},
		{"tls missing ca", "mysql:\n  tls:\n    mode: verify-identity\n    ca_file: /nonexistent/ca.pem\n", []string{`mysql.tls.ca_file: open /nonexistent/ca.pem`}},
		{"start pos without file", "mysql:\n  start:\n    pos: 120\n", []string{`line 3: mysql.start.pos is set without mysql.start.file`}},
		{"start gtid and file", "mysql:\n  start:\n    file: b.000001\n    gtid_set: x:1\n", []string{`mysql.start.gtid_set and mysql.start.file are both set`}},
		{"start gtid with gtid off", "mysql:\n  gtid: off\n  start:\n    gtid_set: x:1\n", []string{`mysql.start.gtid_set is set but mysql.gtid is off`}},
		{"redis addr", "redis:\n  addr: redis\n", []string{`redis.addr "redis" is not host:port`, `"127.0.0.1:6379"`}},
		{"cluster db", "redis:\n  addrs: [a:1, b:2]\n  db: 2\n", []string{`line 3: redis.db is 2 but a Redis Cluster has only database 0`}},
		{"cluster addr", "redis:\n  addr: c:3\n  addrs: [a:1, b:2]\n", []string{`line 2: redis.addr c:3 is not one of redis.addrs`}},
		{"cluster dup", "redis:\n  addrs: [a:1, a:1]\n", []string{`redis.addrs lists a:1 twice`}},
		{"cluster bad addr", "redis:\n  addrs: [a]\n", []string{`redis.addrs "a" is not host:port`}},
		{"redis pool", "redis:\n  pool_size: -1\n", []string{`redis.pool_size is -1`}},
		{"redis tls disabled", "redis:\n  tls:\n    insecure_skip_verify: true\n", []string{`line 3: redis.tls.insecure_skip_verify is set but redis.tls.enabled is false`}},
		{"redis tls key only", "redis:\n  tls:\n    enabled: true\n    key_file: /k.pem\n", []string{`redis.tls.key_file is set without cert_file`}},
		{"include empty", "tables:\n  include: []\n", []string{`line 2: tables.include is empty, so no table would be replicated`}},
		{"bad glob", "tables:\n  include: [\"shop.[\"]\n", []string{`config.yaml line 2: tables.include[0] "shop.[" is not a valid glob`}},
		{"glob without dot", "tables:\n  exclude: [shop]\n", []string{`tables.exclude[0] "shop" has no "."; write a db.table glob like "shop.*"`}},
		{"rule match", "tables:\n  rules:\n    - ttl: 1s\n", []string{`tables.rules[0].match is empty`}},
		{"rule dup match", "tables:\n  rules:\n    - match: a.b\n    - match: a.b\n", []string{`line 4: tables.rules[1].match "a.b" repeats tables.rules[0].match`}},
		{"rule include and exclude", "tables:\n  rules:\n    - match: a.b\n      columns: {include: [x], exclude: [y]}\n", []string{`tables.rules[0].columns sets both include and exclude`}},
		{"rule rename metadata", "tables:\n  rules:\n    - match: a.b\n      columns:\n        rename: {version: _v}\n", []string{`line 5: tables.rules[0].columns.rename renames "version" to "_v"`, `reserved for metadata`}},
		{"rule rename collide", "tables:\n  rules:\n    - match: a.b\n      columns:\n        rename: {a: x, b: x}\n", []string{`tables.rules[0].columns.rename renames both "a" and "b" to "x"`}},
		{"rule rename onto included", "tables:\n  rules:\n    - match: a.b\n      columns:\n        include: [a, x]\n        rename: {a: x}\n", []string{`renames "a" to "x", which is also an included column`}},
		{"rule rename excluded", "tables:\n  rules:\n    - match: a.b\n      columns:\n        exclude: [a]\n        rename: {a: x}\n", []string{`renames "a", which tables.rules[0].columns.exclude drops`}},
		{"rule key unclosed", "tables:\n  rules:\n    - match: a.b\n      key: \"u:${id\"\n", []string{`line 4: tables.rules[0].key: template "u:${id" has an unclosed "${"`}},
		{"rule key dollar", "tables:\n  rules:\n    - match: a.b\n      key: \"u:$id\"\n", []string{`tables.rules[0].key: template "u:$id" has a "$" not followed by "{"`}},
		{"rule key empty placeholder", "tables:\n  rules:\n    - match: a.b\n      key: \"u:${}\"\n", []string{`bad placeholder "${}"`}},
		{"rule key no row", "tables:\n  rules:\n    - match: a.b\n      key: \"${db}:${table}\"\n", []string{`does not name the row`}},
		{"rule ttl", "tables:\n  rules:\n    - match: a.b\n      ttl: -1s\n", []string{`tables.rules[0].ttl is -1s; it must not be negative`}},
		{"rule format", "tables:\n  rules:\n    - match: a.b\n      format: xml\n", []string{`tables.rules[0].format is "xml"; set it to one of: hash, json`}},
		{"sink format", "sink:\n  format: msgpack\n", []string{`sink.format is "msgpack"; set it to one of: hash, json`}},
		{"sink batch rows", "sink:\n  batch_rows: 0\n", []string{`line 2: sink.batch_rows is 0; it must be a positive number`}},
		{"sink lanes", "sink:\n  lanes: -2\n", []string{`sink.lanes is -2`}},
		{"sink tombstone", "sink:\n  tombstone_ttl: 0s\n", []string{`sink.tombstone_ttl is 0s`}},
		{"checkpoint store", "checkpoint:\n  store: s3\n", []string{`checkpoint.store is "s3"; set it to one of: file, redis`}},
		{"checkpoint path", "checkpoint:\n  path: \"\"\n", []string{`line 2: checkpoint.path is empty; checkpoint.store file needs the path`}},
		{"checkpoint key", "checkpoint:\n  store: redis\n  key: \"\"\n", []string{`checkpoint.key is empty; checkpoint.store redis needs`}},
		{"checkpoint interval", "checkpoint:\n  interval: 0s\n", []string{`checkpoint.interval is 0s`}},
		{"kafka compression", "kafka:\n  compression: brotli\n", []string{`kafka.compression is "brotli"; set it to one of: none, gzip, snappy, lz4, zstd`}},
		{"kafka acks", "kafka:\n  required_acks: \"2\"\n", []string{`kafka.required_acks is "2"`}},
		{"kafka topic", "kafka:\n  topic: \"a b\"\n", []string{`kafka.topic "a b" is not a valid Kafka topic`}},
		{"kafka dlq same", "kafka:\n  dead_letter_topic: binlogsync\n", []string{`kafka.dead_letter_topic is the same as kafka.topic`}},
		{"kafka brokers", "kafka:\n  brokers: [kafka]\n", []string{`kafka.brokers "kafka" is not host:port`, `127.0.0.1:9092`}},
		{"kafka partitions", "kafka:\n  partitions: 0\n", []string{`kafka.partitions is 0`}},
		{"sasl mechanism", "kafka:\n  sasl:\n    mechanism: gssapi\n", []string{`kafka.sasl.mechanism is "gssapi"`}},
		{"sasl without user", "kafka:\n  sasl:\n    mechanism: plain\n", []string{`kafka.sasl.mechanism plain needs kafka.sasl.user and kafka.sasl.password`}},
		{"sasl user without mechanism", "kafka:\n  sasl:\n    user: bob\n", []string{`kafka.sasl.user or password is set but kafka.sasl.mechanism is none`}},
		{"http addr", "http:\n  addr: \"9090\"\n", []string{`http.addr "9090" is not host:port`}},
		{"log level", "log:\n  level: verbose\n", []string{`log.level is "verbose"; set it to one of: debug, info, warn, error`}},
		{"log format", "log:\n  format: xml\n", []string{`log.format is "xml"`}},
		{"reconcile chunk", "reconcile:\n  chunk_rows: 0\n", []string{`reconcile.chunk_rows is 0`}},
		{"reconcile rate", "reconcile:\n  rate_limit_rows: -5\n", []string{`reconcile.rate_limit_rows is -5`}},
		{"reconcile open without token", "reconcile:\n  http_addr: 0.0.0.0:9091\n", []string{`line 2: reconcile.http_addr 0.0.0.0:9091 is reachable from other hosts but reconcile.token is empty`}},
		{"reconcile state key", "reconcile:\n  state_key: \"\"\n", []string{`reconcile.state_key is empty`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load("config.yaml", []byte(tc.yaml), nil)
			assertErr(t, err, tc.want...)
		})
	}
}

func TestValidCombinations(t *testing.T) {
	c := mustLoad(t, `
role: source
transport: {kind: kafka}
kafka:
  brokers: [127.0.0.1:9092]
  sasl: {mechanism: scram-sha-512, user: u, password: p}
redis:
  addrs: [127.0.0.1:7000, 127.0.0.1:7001]
reconcile:
  http_addr: 0.0.0.0:9091
  token: t
tables:
  rules:
    - match: shop.users
      key: "user:${id}"
      columns: {include: [id, a, b], rename: {a: b, b: c}}
`)
	if !c.Redis.Cluster() || c.Redis.Addr != "" {
		t.Errorf("cluster: Cluster()=%v addr=%q; want a cluster without the default addr", c.Redis.Cluster(), c.Redis.Addr)
	}
	r := c.Rule("shop", "users")
	if r == nil || r.Format != FormatHash || r.Key != "user:${id}" {
		t.Fatalf("rule = %+v", r)
	}
	c = mustLoad(t, "tables:\n  rules:\n    - match: a.*\n")
	if got := c.Tables.Rules[0].Key; got != DefaultKeyTemplate {
		t.Errorf("rule key = %q, want the default template", got)
	}
	c = mustLoad(t, "mysql:\n  server_id: 1_000\n\nkafka:\n") // empty section keeps defaults
	if c.MySQL.ServerID != 1000 || c.Kafka.Topic != "binlogsync" {
		t.Errorf("server_id = %d, kafka.topic = %q", c.MySQL.ServerID, c.Kafka.Topic)
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mysqlPW := write("mysql", "s3cret-mysql\n")
	redisPW := write("redis", "s3cret-redis\r\n")
	token := write("token", "tok-123")
	saslPW := write("sasl", "s3cret-sasl\n")
	empty := write("empty", "\n")

	c := mustLoad(t, "mysql:\n  password_file: "+mysqlPW+"\nkafka:\n  sasl: {mechanism: plain, user: u, password_file: "+saslPW+"}\n",
		"BINLOGSYNC_REDIS_PASSWORD_FILE="+redisPW, "BINLOGSYNC_RECONCILE_TOKEN_FILE="+token)
	got := []string{c.MySQL.Password, c.Redis.Password, c.Kafka.SASL.Password, c.Reconcile.Token}
	if want := []string{"s3cret-mysql", "s3cret-redis", "s3cret-sasl", "tok-123"}; !reflect.DeepEqual(got, want) {
		t.Errorf("secrets = %q, want the files' contents without the newline: %q", got, want)
	}

	_, err := load("config.yaml", []byte("mysql:\n  password: x\n  password_file: "+mysqlPW+"\n"), nil)
	assertErr(t, err, "config.yaml line 3: mysql.password and mysql.password_file are both set; keep only one")
	_, err = load("", nil, []string{"BINLOGSYNC_REDIS_PASSWORD=x", "BINLOGSYNC_REDIS_PASSWORD_FILE=" + redisPW})
	assertErr(t, err, "BINLOGSYNC_REDIS_PASSWORD_FILE: redis.password and redis.password_file are both set")
	_, err = load("", nil, []string{"BINLOGSYNC_MYSQL_PASSWORD_FILE=" + filepath.Join(dir, "missing")})
	assertErr(t, err, "reading mysql.password_file", "no such file")
	_, err = load("", nil, []string{"BINLOGSYNC_RECONCILE_TOKEN_FILE=" + empty})
	assertErr(t, err, "reconcile.token_file "+empty+" is empty")
}

func TestRedacted(t *testing.T) {
	secrets := []string{"pw-mysql-1", "pw-redis-2", "pw-sasl-3", "tok-4"}
	c := mustLoad(t, "", "BINLOGSYNC_MYSQL_PASSWORD="+secrets[0], "BINLOGSYNC_REDIS_PASSWORD="+secrets[1],
		"BINLOGSYNC_KAFKA_SASL_MECHANISM=plain", "BINLOGSYNC_KAFKA_SASL_USER=bob",
		"BINLOGSYNC_KAFKA_SASL_PASSWORD="+secrets[2], "BINLOGSYNC_RECONCILE_TOKEN="+secrets[3])
	out := c.Redacted()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("Redacted() shows secret %q:\n%s", s, out)
		}
	}
	if n := strings.Count(out, `"***"`) + strings.Count(out, `'***'`); n != 4 {
		t.Errorf("Redacted() has %d redacted values, want 4:\n%s", n, out)
	}
	if !strings.Contains(out, "user: bob") || !strings.Contains(out, "tombstone_ttl: 24h\n") {
		t.Errorf("Redacted() lacks non-secret values:\n%s", out)
	}

	// Redacted output is valid configuration that loads back to the same.
	c = mustLoad(t, "tables:\n  rules:\n    - match: a.b\n      columns: {rename: {x: y}}\n      ttl: 90m\n",
		"BINLOGSYNC_MYSQL_SERVER_ID=77", "BINLOGSYNC_SINK_KEY_PREFIX=app:")
	again := mustLoad(t, c.Redacted())
	if again.Redacted() != c.Redacted() {
		t.Errorf("Redacted() does not round-trip:\n%s\n---\n%s", c.Redacted(), again.Redacted())
	}
}

func TestTableSelected(t *testing.T) {
	c := mustLoad(t, "tables:\n  include: [\"shop.*\", \"crm.user?\", \"*.audit\"]\n  exclude: [\"shop.tmp_*\"]\n")
	cases := []struct {
		db, table string
		want      bool
	}{
		{"shop", "orders", true},
		{"shop", "tmp_x", false},
		{"crm", "users", true},
		{"crm", "user", false},
		{"billing", "audit", true},
		{"billing", "invoices", false},
		{"mysql", "audit", false},
		{"PERFORMANCE_SCHEMA", "audit", false},
		{"sys", "audit", false},
	}
	for _, tc := range cases {
		if got := c.TableSelected(tc.db, tc.table); got != tc.want {
			t.Errorf("TableSelected(%s, %s) = %v, want %v", tc.db, tc.table, got, tc.want)
		}
	}
	all := mustLoad(t, "")
	if !all.TableSelected("a", "b") || all.TableSelected("information_schema", "tables") {
		t.Errorf("default include should select user tables and skip system schemas")
	}
}

func TestRuleFirstMatchWins(t *testing.T) {
	c := mustLoad(t, "tables:\n  rules:\n    - {match: shop.users, ttl: 1s}\n    - {match: \"shop.*\", ttl: 2s}\n")
	if r := c.Rule("shop", "users"); r == nil || r.TTL != time.Second {
		t.Errorf("Rule(shop, users) = %+v, want the first rule", r)
	}
	if r := c.Rule("shop", "orders"); r == nil || r.TTL != 2*time.Second {
		t.Errorf("Rule(shop, orders) = %+v, want the second rule", r)
	}
	if r := c.Rule("crm", "users"); r != nil {
		t.Errorf("Rule(crm, users) = %+v, want nil", r)
	}
}

func TestDefaultServerID(t *testing.T) {
	ids := map[uint32]bool{}
	for _, h := range []string{"", "a", "db-1", "db-2", "sink-7.prod.example.com"} {
		id := DefaultServerID(h)
		if id < 1_000_000_000 || id >= 4_000_000_000 {
			t.Errorf("DefaultServerID(%q) = %d, outside [1e9, 4e9)", h, id)
		}
		if id != DefaultServerID(h) {
			t.Errorf("DefaultServerID(%q) is not stable", h)
		}
		ids[id] = true
	}
	if len(ids) != 5 {
		t.Errorf("5 host names gave %d distinct ids", len(ids))
	}
}

func TestParseKeyTemplate(t *testing.T) {
	segs, err := ParseKeyTemplate("u:${db}/${id}:${tenant}$x}")
	if err == nil {
		t.Fatalf("want an error for a lone $, got %+v", segs)
	}
	segs, err = ParseKeyTemplate("user:${id}:${tenant_id}!")
	if err != nil {
		t.Fatal(err)
	}
	want := []KeySegment{{Literal: "user:"}, {Placeholder: "id"}, {Literal: ":"}, {Placeholder: "tenant_id"}, {Literal: "!"}}
	if !reflect.DeepEqual(segs, want) {
		t.Errorf("segments = %+v, want %+v", segs, want)
	}
	segs, err = ParseKeyTemplate(DefaultKeyTemplate)
	if err != nil || len(segs) != 5 || segs[4].Placeholder != "pk" {
		t.Errorf("default template = %+v, %v", segs, err)
	}
}

func TestLoadFile(t *testing.T) {
	p := writeFile(t, "binlogsync.yaml", "mysql:\n  user: repl\n  flavour: mariadb\n")
	_, err := Load(p, nil)
	assertErr(t, err, p+` line 3: unknown key "mysql.flavour" (did you mean "mysql.flavor"?)`)
	_, err = Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
	assertErr(t, err, "reading config", "no such file")
	c, err := Load(writeFile(t, "empty.yaml", ""), nil)
	if err != nil || c.Role != RoleAll {
		t.Fatalf("empty file: %+v, %v", c, err)
	}
}

func TestLeaves(t *testing.T) {
	// The reflection walk behind env names, secrets and the example test.
	var paths, secrets []string
	for _, l := range leaves(reflect.TypeOf(Config{}), "", nil) {
		paths = append(paths, l.path)
		if l.secret {
			secrets = append(secrets, l.path)
		}
	}
	for _, want := range []string{"mysql.tls.mode", "tables.rules[].columns.rename", "kafka.sasl.password_file", "reconcile.state_key"} {
		if !slices.Contains(paths, want) {
			t.Errorf("leaf %s missing", want)
		}
	}
	if want := []string{"mysql.password", "redis.password", "kafka.sasl.password", "reconcile.token"}; !reflect.DeepEqual(secrets, want) {
		t.Errorf("secrets = %v, want %v", secrets, want)
	}
}
