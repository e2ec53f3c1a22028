// Package config loads, overrides, defaults and validates binlogsync's
// configuration (SPEC section 6).
//
// A configuration comes from a YAML file, then from environment variables
// (BINLOGSYNC_ + the key path upper-cased with "." as "_"), then from defaults
// that depend on other keys; Load validates the result. Every error names the
// key, where its value came from (file line or environment variable) and the
// fix. config.example.yaml at the repository root documents every key.
package config

import (
	"fmt"
	"os"
	"time"
)

// Values of Config.Role.
const (
	RoleAll    = "all"
	RoleSource = "source"
	RoleSink   = "sink"
)

// Values of MySQL.Flavor.
const (
	FlavorAuto    = "auto"
	FlavorMySQL   = "mysql"
	FlavorMariaDB = "mariadb"
)

// Values of MySQL.GTID.
const (
	GTIDAuto = "auto"
	GTIDOn   = "on"
	GTIDOff  = "off"
)

// Values of MySQLTLS.Mode, with the meanings of the mysql client's --ssl-mode.
const (
	TLSDisabled       = "disabled"
	TLSPreferred      = "preferred"
	TLSRequired       = "required"
	TLSVerifyCA       = "verify-ca"
	TLSVerifyIdentity = "verify-identity"
)

// Values of Sink.Format and TableRule.Format.
const (
	FormatHash = "hash"
	FormatJSON = "json"
)

// Values of Checkpoint.Store.
const (
	StoreFile  = "file"
	StoreRedis = "redis"
)

// Values of Transport.Kind.
const (
	TransportEmbedded = "embedded"
	TransportKafka    = "kafka"
)

// Values of SASL.Mechanism.
const (
	SASLNone        = "none"
	SASLPlain       = "plain"
	SASLScramSHA256 = "scram-sha-256"
	SASLScramSHA512 = "scram-sha-512"
)

// DefaultKeyTemplate is the Redis key of a row when no rule sets one (SPEC 2);
// Sink.KeyPrefix is prepended to it, as to every template.
const DefaultKeyTemplate = "${db}:${table}:${pk}"

// Config is binlogsync's whole configuration. Field comments give the default.
// Secrets are tagged `secret:"true"`; each has a sibling <name>_file key.
type Config struct {
	// Role is the part of the pipeline this process runs: all | source | sink.
	// Default all. source and sink need transport.kind kafka.
	Role string `yaml:"role"`
	// ShutdownTimeout bounds how long a graceful stop waits for in-flight
	// batches to be applied and checkpointed. Default 30s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	MySQL           MySQL         `yaml:"mysql"`
	Redis           Redis         `yaml:"redis"`
	Tables          Tables        `yaml:"tables"`
	Sink            Sink          `yaml:"sink"`
	Checkpoint      Checkpoint    `yaml:"checkpoint"`
	Transport       Transport     `yaml:"transport"`
	Kafka           Kafka         `yaml:"kafka"`
	HTTP            HTTP          `yaml:"http"`
	Log             Log           `yaml:"log"`
	// Bootstrap, when true and no checkpoint exists, loads every selected table
	// through the reconciler before streaming. Default false.
	Bootstrap bool      `yaml:"bootstrap"`
	Reconcile Reconcile `yaml:"reconcile"`
	Leader    Leader    `yaml:"leader"`

	// origin maps a key path to where its value came from ("config.yaml line 7"
	// or "BINLOGSYNC_MYSQL_ADDR"), so validation errors can say it.
	origin map[string]string
}

// MySQL is the source server and how binlogsync replicates from it.
type MySQL struct {
	// Addr is host:port. Default 127.0.0.1:3306.
	Addr string `yaml:"addr"`
	// User needs REPLICATION SLAVE, REPLICATION CLIENT and SELECT. Default binlogsync.
	User string `yaml:"user"`
	// Password of User. Default "".
	Password string `yaml:"password" secret:"true"`
	// PasswordFile is read for Password (trailing newline trimmed). Default "".
	PasswordFile string `yaml:"password_file"`
	// Flavor is mysql | mariadb | auto (detected at connect). Default auto.
	Flavor string `yaml:"flavor"`
	// ServerID is the replica server id; 0 means DefaultServerID(hostname).
	// Default 0.
	ServerID uint32 `yaml:"server_id"`
	// GTID is whether to resume by GTID: auto (when the server has GTIDs) |
	// on | off. Default auto.
	GTID string `yaml:"gtid"`
	// Heartbeat is the replication heartbeat period asked of the server. Default 1s.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// ReadTimeout is how long a silent connection is trusted; must exceed
	// Heartbeat. Default 30s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// ConnectTimeout bounds dialing and the handshake. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// ReconnectMaxBackoff caps the exponential wait between reconnect
	// attempts after the connection drops. Default 30s.
	ReconnectMaxBackoff time.Duration `yaml:"reconnect_max_backoff"`
	TLS                 MySQLTLS      `yaml:"tls"`
	Start               Start         `yaml:"start"`
}

// MySQLTLS configures TLS to MySQL.
type MySQLTLS struct {
	// Mode is disabled | preferred | required | verify-ca | verify-identity.
	// Default disabled.
	Mode string `yaml:"mode"`
	// CAFile is a PEM bundle to verify the server; needed by verify-ca.
	// Default "" (system roots for verify-identity).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and key, both or
	// neither. Default "".
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name verify-identity checks; default the host of mysql.addr.
	ServerName string `yaml:"server_name"`
}

// Start is an explicit start position. When set it overrides the checkpoint.
type Start struct {
	// File is a binlog file name. Default "".
	File string `yaml:"file"`
	// Pos is a byte offset in File; needs File. Default 0 (= 4, the first event).
	Pos uint32 `yaml:"pos"`
	// GTIDSet starts after these transactions; not with File. Default "".
	GTIDSet string `yaml:"gtid_set"`
}

// IsZero reports whether no start position is set.
func (s Start) IsZero() bool { return s.File == "" && s.GTIDSet == "" }

// Redis is the target.
type Redis struct {
	// Addr is host:port of a single Redis. Default 127.0.0.1:6379 when Addrs
	// is empty.
	Addr string `yaml:"addr"`
	// Addrs, when not empty, are seed nodes of a Redis Cluster; Addr must then
	// be empty or one of them. Default [].
	Addrs []string `yaml:"addrs"`
	// Username is the ACL user. Default "" (the default user).
	Username string `yaml:"username"`
	// Password of Username. Default "".
	Password string `yaml:"password" secret:"true"`
	// PasswordFile is read for Password. Default "".
	PasswordFile string `yaml:"password_file"`
	// DB is the database number; must be 0 with a cluster. Default 0.
	DB  int       `yaml:"db"`
	TLS ClientTLS `yaml:"tls"`
	// PoolSize is connections per node; 0 = 10 per GOMAXPROCS (go-redis), at least 2 × sink.lanes + 6. Default 0.
	PoolSize int `yaml:"pool_size"`
	// DialTimeout, ReadTimeout, WriteTimeout bound network calls. Defaults 5s, 3s, 3s.
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
}

// Cluster reports whether the target is a Redis Cluster.
func (r *Redis) Cluster() bool { return len(r.Addrs) > 0 }

// ClientTLS configures TLS to Redis or Kafka.
type ClientTLS struct {
	// Enabled turns TLS on. Default false.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle to verify the server. Default "" (system roots).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and key, both or
	// neither. Default "".
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the server certificate. Default "".
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables verification of the server (tests only). Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Tables selects tables and sets per-table options.
type Tables struct {
	// Include are db.table globs (path.Match syntax). Default ["*.*"].
	// The system schemas mysql, sys, performance_schema and
	// information_schema are always excluded.
	Include []string `yaml:"include"`
	// Exclude are db.table globs removed from Include. Default [].
	Exclude []string `yaml:"exclude"`
	// Rules are per-table options; the first rule that matches wins. Default [].
	Rules []TableRule `yaml:"rules"`
}

// TableRule holds options for the tables its Match glob selects.
type TableRule struct {
	// Match is a db.table glob. Required.
	Match   string  `yaml:"match"`
	Columns Columns `yaml:"columns"`
	// Key is a key template with placeholders ${db} ${table} ${pk} and
	// ${<primary-key column>}. Default "" = DefaultKeyTemplate (Load fills it).
	Key string `yaml:"key"`
	// TTL expires written keys; 0 = never. Default 0s.
	TTL time.Duration `yaml:"ttl"`
	// Format is hash | json; "" = sink.format (Load fills it). Default "".
	Format string `yaml:"format"`
	// KeyColumns, for a table without a primary key, are the columns of a NOT
	// NULL unique key that identify its rows (checked at start). Without them
	// such a table is skipped with a warning. Default [].
	KeyColumns []string `yaml:"key_columns"`
	// KeyIndex makes the sink keep a set of the table's row keys per cluster
	// slot (__bls:idx:...), so that the reconciler finds orphan keys (rows
	// deleted behind the stream) of any primary-key type on every pass;
	// without it only single-column integer keys are probed. Default false.
	KeyIndex bool `yaml:"key_index"`
	// RestoreExpired makes the reconciler write a missing key of a table with
	// a TTL back instead of taking it for an expired one. Default false.
	RestoreExpired bool `yaml:"restore_expired"`
	// ReconcileInterval is the time between scheduled passes over the table
	// in `reconciler serve`; 0 = reconcile.interval. Default 0s.
	ReconcileInterval time.Duration `yaml:"reconcile_interval"`
}

// Columns picks and renames a table's columns.
type Columns struct {
	// Include, when not empty, keeps only these columns. Default [].
	Include []string `yaml:"include"`
	// Exclude drops these columns; not with Include. Default [].
	Exclude []string `yaml:"exclude"`
	// Rename maps a column name to its field name in Redis. Default {}.
	Rename map[string]string `yaml:"rename"`
}

// Sink is how rows are applied to Redis.
type Sink struct {
	// Format is hash | json. Default hash.
	Format string `yaml:"format"`
	// KeyPrefix is prepended to every key. Default "".
	KeyPrefix string `yaml:"key_prefix"`
	// BatchRows is the most rows per apply batch. Default 2000.
	BatchRows int `yaml:"batch_rows"`
	// BatchWait is the longest a partial batch waits for more rows. Default 2ms.
	BatchWait time.Duration `yaml:"batch_wait"`
	// Lanes is how many pipelines apply in parallel (rows hashed by key). Default 4.
	Lanes int `yaml:"lanes"`
	// RowsPerCall is the most rows per Redis script call. Default 100.
	RowsPerCall int `yaml:"rows_per_call"`
	// TombstoneTTL is how long a deleted row's tombstone fences replays. Default 24h.
	TombstoneTTL time.Duration `yaml:"tombstone_ttl"`
	// QueueBatches is how many batches the embedded transport buffers between
	// source and sink. Default 16.
	QueueBatches int `yaml:"queue_batches"`
	// DeadLetter is a Redis stream key for rows that cannot be applied;
	// "" = stop on such a row. Default "".
	DeadLetter string `yaml:"dead_letter"`
}

// Checkpoint is where the applied position is persisted.
type Checkpoint struct {
	// Store is file | redis. Default file.
	Store string `yaml:"store"`
	// Path is the file store's path. Default binlogsync.checkpoint.
	Path string `yaml:"path"`
	// Key is the redis store's key. Default binlogsync:checkpoint.
	Key string `yaml:"key"`
	// Interval is how often the applied position is persisted. Default 1s.
	Interval time.Duration `yaml:"interval"`
}

// Transport picks how changes travel from source to sink.
type Transport struct {
	// Kind is embedded | kafka. Default embedded.
	Kind string `yaml:"kind"`
}

// Kafka configures the kafka transport.
type Kafka struct {
	// Brokers are host:port seeds; required with transport.kind kafka. Default [].
	Brokers []string `yaml:"brokers"`
	// Topic receives the changes. Default binlogsync.
	Topic string `yaml:"topic"`
	// TopicPerTable, when true, publishes to <topic>.<db>.<table>. Default false.
	TopicPerTable bool `yaml:"topic_per_table"`
	// ClientID names this client to the brokers. Default binlogsync.
	ClientID string `yaml:"client_id"`
	// Compression is none | gzip | snappy | lz4 | zstd. Default snappy (see docs/kafka.md).
	Compression string `yaml:"compression"`
	// BatchBytes is the most bytes of one partition's batch in a produce request. Default 1048576.
	BatchBytes int `yaml:"batch_bytes"`
	// BatchSize is the most messages of one partition's batch in a produce request. Default 256.
	BatchSize int `yaml:"batch_size"`
	// BatchTimeout is the longest a partial produce batch waits. Default 2ms.
	BatchTimeout time.Duration `yaml:"batch_timeout"`
	// RequiredAcks is all | one | none. Default all.
	RequiredAcks string `yaml:"required_acks"`
	// MaxUnacknowledged bounds the messages the source has handed to Kafka and not had acknowledged; at the
	// bound it stops reading the binlog (the memory bound of an outage). Default 16384.
	MaxUnacknowledged int `yaml:"max_unacknowledged"`
	// GroupID is the sinks' consumer group. Default binlogsync-sink.
	GroupID string `yaml:"group_id"`
	// SessionTimeout is how long the group waits for a silent sink before
	// giving its partitions to the others. Default 10s.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// CommitInterval is the least time between two offset commits of a sink;
	// 0 commits after every applied batch. Default 100ms.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// CreateTopic creates missing topics at start. Default false.
	CreateTopic bool `yaml:"create_topic"`
	// Partitions and ReplicationFactor apply to created topics. Defaults 12, 1.
	Partitions        int `yaml:"partitions"`
	ReplicationFactor int `yaml:"replication_factor"`
	// DeadLetterTopic receives messages the sink cannot apply. Default binlogsync-dlq.
	DeadLetterTopic string    `yaml:"dead_letter_topic"`
	TLS             ClientTLS `yaml:"tls"`
	SASL            SASL      `yaml:"sasl"`
}

// SASL configures Kafka authentication.
type SASL struct {
	// Mechanism is none | plain | scram-sha-256 | scram-sha-512. Default none.
	Mechanism string `yaml:"mechanism"`
	// User and Password authenticate. Default "".
	User     string `yaml:"user"`
	Password string `yaml:"password" secret:"true"`
	// PasswordFile is read for Password. Default "".
	PasswordFile string `yaml:"password_file"`
}

// HTTP serves /metrics, /healthz and /readyz.
type HTTP struct {
	// Addr is host:port to listen on; "" disables the server. Default 127.0.0.1:9090.
	Addr string `yaml:"addr"`
}

// Log configures the slog logger.
type Log struct {
	// Level is debug | info | warn | error. Default info.
	Level string `yaml:"level"`
	// Format is json | text. Default json.
	Format string `yaml:"format"`
}

// Leader configures active/passive sources: with Enabled, a process reads the
// binlog only while it holds a lease in Redis; the others wait as standbys and
// one takes over when the leader dies. Share the checkpoint (checkpoint.store:
// redis) between them.
type Leader struct {
	// Enabled turns leader election on. Default false.
	Enabled bool `yaml:"enabled"`
	// Key is the Redis key of the lease. Default binlogsync:leader.
	Key string `yaml:"key"`
	// TTL is how long a lease lives without renewal; a standby takes over
	// within about TTL after the leader dies. Default 5s.
	TTL time.Duration `yaml:"ttl"`
}

// Reconcile configures the reconciler commands.
type Reconcile struct {
	// Interval is the time between passes of `reconciler serve`. Default 1h.
	Interval time.Duration `yaml:"interval"`
	// ChunkRows is the starting number of rows per hashed range. Default 1000.
	ChunkRows int `yaml:"chunk_rows"`
	// ChunkTarget is the query time chunks are resized towards. Default 50ms.
	ChunkTarget time.Duration `yaml:"chunk_target"`
	// RateLimitRows caps rows read per second; 0 = unlimited. Default 0.
	RateLimitRows int `yaml:"rate_limit_rows"`
	// Repair, when false, only reports drift. Default true.
	Repair bool `yaml:"repair"`
	// Token is the bearer token the HTTP trigger requires; needed when
	// HTTPAddr is not a loopback address. Default "".
	Token string `yaml:"token" secret:"true"`
	// TokenFile is read for Token. Default "".
	TokenFile string `yaml:"token_file"`
	// HTTPAddr is where `reconciler serve` listens; "" disables it. Default 127.0.0.1:9091.
	HTTPAddr string `yaml:"http_addr"`
	// FullEvery is how often a scheduled pass hashes every Redis row from its
	// fields instead of trusting the row hashes cached by earlier passes;
	// 0 = every pass is full. Default 24h.
	FullEvery time.Duration `yaml:"full_every"`
	// SchemaCheck is how often `reconciler serve` compares the tables' columns with the ones of their last pass,
	// to reconcile a table right after an ALTER TABLE changed its columns; 0 = never. Default 1m.
	SchemaCheck time.Duration `yaml:"schema_check"`
	// ScanOrphans makes cached scheduled passes also SCAN each table's key
	// pattern for keys written outside the pipeline (full passes always do).
	// Default false.
	ScanOrphans bool `yaml:"scan_orphans"`
	// StateKey is the Redis key holding the reconciler's progress and last report.
	// Default binlogsync:reconcile.
	StateKey string `yaml:"state_key"`
	// HashRows is where a full pass hashes the rows of a single Redis:
	// "reconciler" reads them (pipelined HGETALL) and hashes them itself, a
	// quarter of Redis's CPU but every row's bytes over the network; "redis"
	// hashes them in a Lua script that returns only digests. A Redis Cluster
	// and the JSON format always use the script. Default reconciler.
	HashRows string `yaml:"hash_rows"`
}

// defaults returns the configuration before the file and the environment.
func defaults() *Config {
	return &Config{
		Role:            RoleAll,
		ShutdownTimeout: 30 * time.Second,
		MySQL: MySQL{
			Addr:                "127.0.0.1:3306",
			User:                "binlogsync",
			Flavor:              FlavorAuto,
			GTID:                GTIDAuto,
			Heartbeat:           time.Second,
			ReadTimeout:         30 * time.Second,
			ConnectTimeout:      10 * time.Second,
			ReconnectMaxBackoff: 30 * time.Second,
			TLS:                 MySQLTLS{Mode: TLSDisabled},
		},
		Redis: Redis{
			DialTimeout:  5 * time.Second,
			ReadTimeout:  3 * time.Second,
			WriteTimeout: 3 * time.Second,
		},
		Tables: Tables{Include: []string{"*.*"}},
		Sink: Sink{
			Format:       FormatHash,
			BatchRows:    2000,
			BatchWait:    2 * time.Millisecond,
			Lanes:        8,
			RowsPerCall:  100,
			TombstoneTTL: 24 * time.Hour,
			QueueBatches: 16,
		},
		Checkpoint: Checkpoint{
			Store:    StoreFile,
			Path:     "binlogsync.checkpoint",
			Key:      "binlogsync:checkpoint",
			Interval: time.Second,
		},
		Transport: Transport{Kind: TransportEmbedded},
		Kafka: Kafka{
			Topic:             "binlogsync",
			ClientID:          "binlogsync",
			Compression:       "snappy",
			BatchBytes:        1 << 20,
			BatchSize:         256,
			BatchTimeout:      2 * time.Millisecond,
			RequiredAcks:      "all",
			MaxUnacknowledged: 16384,
			GroupID:           "binlogsync-sink",
			SessionTimeout:    10 * time.Second,
			CommitInterval:    100 * time.Millisecond,
			Partitions:        12,
			ReplicationFactor: 1,
			DeadLetterTopic:   "binlogsync-dlq",
			SASL:              SASL{Mechanism: SASLNone},
		},
		HTTP: HTTP{Addr: "127.0.0.1:9090"},
		Log:  Log{Level: "info", Format: "json"},
		Reconcile: Reconcile{
			Interval:    time.Hour,
			ChunkRows:   1000,
			ChunkTarget: 50 * time.Millisecond,
			Repair:      true,
			FullEvery:   24 * time.Hour,
			HashRows:    "reconciler",
			SchemaCheck: time.Minute,
			HTTPAddr:    "127.0.0.1:9091",
			StateKey:    "binlogsync:reconcile",
		},
		Leader: Leader{Key: "binlogsync:leader", TTL: 5 * time.Second},
	}
}

// Load reads the YAML file at path ("" = none), applies environment
// overrides from environ (KEY=VALUE entries, as os.Environ returns), reads
// secrets from *_file keys, fills derived defaults and validates.
func Load(path string, environ []string) (*Config, error) {
	var data []byte
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("reading config: %w", err)
		}
	}
	return load(path, data, environ)
}

// load is Load on the file's contents; name labels errors.
func load(name string, data []byte, environ []string) (*Config, error) {
	c := defaults()
	c.origin = map[string]string{}
	if err := decodeYAML(c, name, data); err != nil {
		return nil, err
	}
	if err := applyEnv(c, environ); err != nil {
		return nil, err
	}
	if err := readSecretFiles(c); err != nil {
		return nil, err
	}
	if err := c.fillDerived(); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// fillDerived sets defaults that depend on other keys.
func (c *Config) fillDerived() error {
	if c.Redis.Addr == "" && len(c.Redis.Addrs) == 0 {
		c.Redis.Addr = "127.0.0.1:6379"
	}
	if c.MySQL.ServerID == 0 {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("deriving mysql.server_id from the host name: %w; set mysql.server_id", err)
		}
		c.MySQL.ServerID = DefaultServerID(host)
	}
	for i := range c.Tables.Rules {
		r := &c.Tables.Rules[i]
		if r.Key == "" {
			r.Key = DefaultKeyTemplate
		}
		if r.Format == "" {
			r.Format = c.Sink.Format
		}
	}
	return nil
}
