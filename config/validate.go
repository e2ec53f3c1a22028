package config

import (
	"fmt"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	gmysql "github.com/go-mysql-org/go-mysql/mysql"
)

// problem returns an error about key, prefixed with where its value came from.
func (c *Config) problem(key, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	where := c.origin[key]
	if i := strings.LastIndexByte(key, '['); where == "" && i > 0 && strings.HasSuffix(key, "]") {
		where = c.origin[key[:i]] // a list item: where the list was set
	}
	if where != "" {
		return fmt.Errorf("%s: %s", where, msg)
	}
	return fmt.Errorf("%s", msg)
}

// Validate checks the configuration and returns the first problem found,
// naming the key and the fix. Load calls it; call it again after changing a
// loaded Config by hand.
func (c *Config) Validate() error {
	checks := []func() error{
		c.validateTop, c.validateMySQL, c.validateRedis, c.validateTables,
		c.validateSink, c.validateCheckpoint, c.validateTransport, c.validateKafka,
		c.validateMisc, c.validateReconcile, c.validateLeader,
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) oneOf(key, got string, allowed ...string) error {
	if slices.Contains(allowed, got) {
		return nil
	}
	return c.problem(key, "%s is %q; set it to one of: %s", key, got, strings.Join(allowed, ", "))
}

func (c *Config) positive(key string, v int) error {
	if v > 0 {
		return nil
	}
	return c.problem(key, "%s is %d; it must be a positive number", key, v)
}

func (c *Config) positiveDuration(key string, d time.Duration) error {
	if d > 0 {
		return nil
	}
	return c.problem(key, "%s is %s; it must be a positive duration like \"1s\"", key, formatDuration(d))
}

func (c *Config) nonNegativeDuration(key string, d time.Duration) error {
	if d >= 0 {
		return nil
	}
	return c.problem(key, "%s is %s; it must not be negative", key, formatDuration(d))
}

func (c *Config) notEmpty(key, v, why string) error {
	if v != "" {
		return nil
	}
	return c.problem(key, "%s is empty; %s", key, why)
}

// hostPort checks that v is host:port with a numeric port.
func (c *Config) hostPort(key, v string) error {
	_, port, err := net.SplitHostPort(v)
	if err == nil {
		var n uint64
		n, err = strconv.ParseUint(port, 10, 16)
		if err == nil && n == 0 && !strings.HasSuffix(key, "http_addr") && key != "http.addr" {
			err = fmt.Errorf("port 0") // a listener may take port 0 (any free port); a server address may not
		}
	}
	if err != nil {
		return c.problem(key, "%s %q is not host:port (%v); write it like \"127.0.0.1:%s\"", key, v, err, examplePort(key))
	}
	return nil
}

func examplePort(key string) string {
	switch {
	case strings.HasPrefix(key, "mysql"):
		return "3306"
	case strings.HasPrefix(key, "redis"):
		return "6379"
	case strings.HasPrefix(key, "kafka"):
		return "9092"
	}
	return "9090"
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateTop() error {
	return firstErr(
		c.oneOf("role", c.Role, RoleAll, RoleSource, RoleSink),
		c.positiveDuration("shutdown_timeout", c.ShutdownTimeout),
	)
}

func (c *Config) validateMySQL() error {
	m := &c.MySQL
	if err := firstErr(
		c.notEmpty("mysql.addr", m.Addr, `set it to the server's host:port, like "127.0.0.1:3306"`),
		c.hostPort("mysql.addr", m.Addr),
		c.notEmpty("mysql.user", m.User, "set it to a user with REPLICATION SLAVE, REPLICATION CLIENT and SELECT"),
		c.oneOf("mysql.flavor", m.Flavor, FlavorAuto, FlavorMySQL, FlavorMariaDB),
		c.oneOf("mysql.gtid", m.GTID, GTIDAuto, GTIDOn, GTIDOff),
		c.positiveDuration("mysql.heartbeat", m.Heartbeat),
		c.positiveDuration("mysql.read_timeout", m.ReadTimeout),
		c.positiveDuration("mysql.connect_timeout", m.ConnectTimeout),
		c.positiveDuration("mysql.reconnect_max_backoff", m.ReconnectMaxBackoff),
	); err != nil {
		return err
	}
	if m.ReadTimeout <= m.Heartbeat {
		return c.problem("mysql.read_timeout", "mysql.read_timeout (%s) must be greater than mysql.heartbeat (%s), or every quiet moment would look like a dead connection; raise read_timeout to a few heartbeats",
			formatDuration(m.ReadTimeout), formatDuration(m.Heartbeat))
	}

	t := &m.TLS
	if err := c.oneOf("mysql.tls.mode", t.Mode, TLSDisabled, TLSPreferred, TLSRequired, TLSVerifyCA, TLSVerifyIdentity); err != nil {
		return err
	}
	if t.Mode == TLSDisabled {
		for _, f := range []struct{ key, v string }{
			{"mysql.tls.ca_file", t.CAFile}, {"mysql.tls.cert_file", t.CertFile},
			{"mysql.tls.key_file", t.KeyFile}, {"mysql.tls.server_name", t.ServerName},
		} {
			if f.v != "" {
				return c.problem(f.key, "%s is set but mysql.tls.mode is disabled; set mysql.tls.mode (like verify-identity) or remove %s", f.key, f.key)
			}
		}
	}
	if t.Mode == TLSVerifyCA && t.CAFile == "" {
		return c.problem("mysql.tls.mode", "mysql.tls.mode verify-ca needs mysql.tls.ca_file; set it to the PEM CA bundle that signed the server's certificate")
	}
	if _, err := t.Config(m.Addr); err != nil {
		return c.problem("mysql.tls", "mysql.tls.%v", err)
	}

	s := &m.Start
	switch {
	case s.Pos != 0 && s.File == "":
		return c.problem("mysql.start.pos", "mysql.start.pos is set without mysql.start.file; set the binlog file name too (SHOW BINARY LOGS lists them)")
	case s.GTIDSet != "" && s.File != "":
		return c.problem("mysql.start.gtid_set", "mysql.start.gtid_set and mysql.start.file are both set; start either by GTID set or by file and position, not both")
	case s.GTIDSet != "" && m.GTID == GTIDOff:
		return c.problem("mysql.start.gtid_set", "mysql.start.gtid_set is set but mysql.gtid is off; set mysql.gtid to auto or on, or start by mysql.start.file and pos")
	case s.GTIDSet != "" && !ValidGTIDSet(s.GTIDSet):
		return c.problem("mysql.start.gtid_set", "mysql.start.gtid_set %q is not a GTID set; write it as the server shows it (MariaDB: 0-1-1000,1-2-50; MySQL: 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77)", s.GTIDSet)
	}
	return nil
}

// ValidGTIDSet reports whether s parses as a MariaDB or a MySQL GTID set.
func ValidGTIDSet(s string) bool {
	if _, err := gmysql.ParseMariadbGTIDSet(s); err == nil {
		return true
	}
	_, err := gmysql.ParseMysqlGTIDSet(s)
	return err == nil
}

func (c *Config) validateRedis() error {
	r := &c.Redis
	if r.Cluster() {
		for i, a := range r.Addrs {
			if err := c.hostPort("redis.addrs", a); err != nil {
				return err
			}
			if slices.Contains(r.Addrs[:i], a) {
				return c.problem("redis.addrs", "redis.addrs lists %s twice; list each node once", a)
			}
		}
		if r.Addr != "" && !slices.Contains(r.Addrs, r.Addr) {
			return c.problem("redis.addr", "redis.addr %s is not one of redis.addrs (a cluster); remove redis.addr or add it to redis.addrs", r.Addr)
		}
		if r.DB != 0 {
			return c.problem("redis.db", "redis.db is %d but a Redis Cluster has only database 0; set redis.db to 0 or use a single node (redis.addr)", r.DB)
		}
	} else {
		if err := firstErr(
			c.notEmpty("redis.addr", r.Addr, `set it to the server's host:port, like "127.0.0.1:6379", or list cluster nodes in redis.addrs`),
			c.hostPort("redis.addr", r.Addr),
		); err != nil {
			return err
		}
	}
	if r.DB < 0 {
		return c.problem("redis.db", "redis.db is %d; it must be 0 or more", r.DB)
	}
	if r.PoolSize < 0 {
		return c.problem("redis.pool_size", "redis.pool_size is %d; use 0 for the go-redis default or a positive number", r.PoolSize)
	}
	if err := firstErr(
		c.positiveDuration("redis.dial_timeout", r.DialTimeout),
		c.positiveDuration("redis.read_timeout", r.ReadTimeout),
		c.positiveDuration("redis.write_timeout", r.WriteTimeout),
	); err != nil {
		return err
	}
	return c.validateClientTLS("redis.tls", &r.TLS)
}

func (c *Config) validateClientTLS(prefix string, t *ClientTLS) error {
	if !t.Enabled {
		for _, f := range []struct {
			key string
			set bool
		}{
			{"ca_file", t.CAFile != ""}, {"cert_file", t.CertFile != ""}, {"key_file", t.KeyFile != ""},
			{"server_name", t.ServerName != ""}, {"insecure_skip_verify", t.InsecureSkipVerify},
		} {
			if f.set {
				key := prefix + "." + f.key
				return c.problem(key, "%s is set but %s.enabled is false; set %s.enabled: true or remove %s", key, prefix, prefix, key)
			}
		}
		return nil
	}
	if _, err := t.Config(); err != nil {
		return c.problem(prefix, "%s.%v", prefix, err)
	}
	return nil
}

// validGlob checks a db.table glob.
func (c *Config) validGlob(key, g string) error {
	if g == "" {
		return c.problem(key, "%s is empty; write a db.table glob like \"shop.*\"", key)
	}
	if _, err := path.Match(g, ""); err != nil {
		return c.problem(key, "%s %q is not a valid glob (%v); use *, ? and [...] as in path.Match", key, g, err)
	}
	if !strings.Contains(g, ".") {
		return c.problem(key, "%s %q has no \".\"; write a db.table glob like %q", key, g, g+".*")
	}
	return nil
}

func (c *Config) validateTables() error {
	t := &c.Tables
	if len(t.Include) == 0 {
		return c.problem("tables.include", `tables.include is empty, so no table would be replicated; set it to ["*.*"] or to the tables you want`)
	}
	for i, g := range t.Include {
		if err := c.validGlob(fmt.Sprintf("tables.include[%d]", i), g); err != nil {
			return err
		}
	}
	for i, g := range t.Exclude {
		if err := c.validGlob(fmt.Sprintf("tables.exclude[%d]", i), g); err != nil {
			return err
		}
	}
	for i := range t.Rules {
		if err := c.validateRule(i); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateRule(i int) error {
	r := &c.Tables.Rules[i]
	p := fmt.Sprintf("tables.rules[%d]", i)
	if err := c.validGlob(p+".match", r.Match); err != nil {
		return err
	}
	for j := 0; j < i; j++ {
		if c.Tables.Rules[j].Match == r.Match {
			return c.problem(p+".match", "%s.match %q repeats tables.rules[%d].match; the first match wins, so this rule would never apply: merge the two rules", p, r.Match, j)
		}
	}
	col := &r.Columns
	if len(col.Include) > 0 && len(col.Exclude) > 0 {
		return c.problem(p+".columns", "%s.columns sets both include and exclude; keep only one of them", p)
	}
	for _, list := range []struct {
		key   string
		names []string
	}{{p + ".columns.include", col.Include}, {p + ".columns.exclude", col.Exclude}, {p + ".key_columns", r.KeyColumns}} {
		for j, n := range list.names {
			if n == "" {
				return c.problem(list.key, "%s[%d] is empty; write a column name", list.key, j)
			}
			if slices.Contains(list.names[:j], n) {
				return c.problem(list.key, "%s lists %q twice; list it once", list.key, n)
			}
		}
	}
	for _, k := range r.KeyColumns {
		if slices.Contains(col.Exclude, k) || (len(col.Include) > 0 && !slices.Contains(col.Include, k)) {
			return c.problem(p+".key_columns", "%s.key_columns names %q, which %s.columns leaves out; key columns must be replicated", p, k, p)
		}
	}
	key := p + ".columns.rename"
	targets := map[string]string{}
	for _, from := range sortedKeys(col.Rename) {
		to := col.Rename[from]
		switch {
		case from == "" || to == "":
			return c.problem(key, "%s has an empty name (%q: %q); write column: new_name", key, from, to)
		case strings.HasPrefix(to, "_"):
			return c.problem(key, "%s renames %q to %q, but field names starting with \"_\" are reserved for metadata such as the version _v; pick a name without the leading \"_\"", key, from, to)
		case slices.Contains(col.Exclude, from):
			return c.problem(key, "%s renames %q, which %s.columns.exclude drops; remove one of the two", key, from, p)
		case len(col.Include) > 0 && !slices.Contains(col.Include, from):
			return c.problem(key, "%s renames %q, which is not in %s.columns.include; add it there or remove the rename", key, from, p)
		}
		if other, dup := targets[to]; dup {
			return c.problem(key, "%s renames both %q and %q to %q; give each its own name", key, other, from, to)
		}
		targets[to] = from
		if _, renamed := col.Rename[to]; !renamed && slices.Contains(col.Include, to) {
			return c.problem(key, "%s renames %q to %q, which is also an included column; pick another name", key, from, to)
		}
	}
	tmpl := r.Key
	if tmpl == "" {
		tmpl = DefaultKeyTemplate
	}
	if _, err := ParseKeyTemplate(tmpl); err != nil {
		return c.problem(p+".key", "%s.key: %v", p, err)
	}
	if err := c.nonNegativeDuration(p+".ttl", r.TTL); err != nil {
		return err
	}
	if err := c.nonNegativeDuration(p+".reconcile_interval", r.ReconcileInterval); err != nil {
		return err
	}
	if r.RestoreExpired && r.TTL == 0 {
		return c.problem(p+".restore_expired", "%s.restore_expired is set but %s.ttl is 0s: keys without a TTL never expire; remove restore_expired or set a ttl", p, p)
	}
	if r.Format != "" {
		return c.oneOf(p+".format", r.Format, FormatHash, FormatJSON)
	}
	return nil
}

func (c *Config) validateSink() error {
	s := &c.Sink
	return firstErr(
		c.oneOf("sink.format", s.Format, FormatHash, FormatJSON),
		c.positive("sink.batch_rows", s.BatchRows),
		c.nonNegativeDuration("sink.batch_wait", s.BatchWait),
		c.positive("sink.lanes", s.Lanes),
		c.positive("sink.rows_per_call", s.RowsPerCall),
		c.positiveDuration("sink.tombstone_ttl", s.TombstoneTTL),
		c.positive("sink.queue_batches", s.QueueBatches),
	)
}

func (c *Config) validateCheckpoint() error {
	k := &c.Checkpoint
	if err := c.oneOf("checkpoint.store", k.Store, StoreFile, StoreRedis); err != nil {
		return err
	}
	switch k.Store {
	case StoreFile:
		if err := c.notEmpty("checkpoint.path", k.Path, "checkpoint.store file needs the path of the checkpoint file, like \"binlogsync.checkpoint\""); err != nil {
			return err
		}
	case StoreRedis:
		if err := c.notEmpty("checkpoint.key", k.Key, "checkpoint.store redis needs the Redis key to keep the checkpoint in, like \"binlogsync:checkpoint\""); err != nil {
			return err
		}
	}
	return c.positiveDuration("checkpoint.interval", k.Interval)
}

func (c *Config) validateTransport() error {
	if err := c.oneOf("transport.kind", c.Transport.Kind, TransportEmbedded, TransportKafka); err != nil {
		return err
	}
	if c.Role != RoleAll && c.Transport.Kind != TransportKafka {
		return c.problem("role", "role %s runs only half of the pipeline, which needs transport.kind kafka between the halves; set transport.kind: kafka (and kafka.brokers) or role: all", c.Role)
	}
	if c.Transport.Kind == TransportKafka && len(c.Kafka.Brokers) == 0 {
		return c.problem("kafka.brokers", "transport.kind is kafka but kafka.brokers is empty; list the brokers, like [\"127.0.0.1:9092\"]")
	}
	return nil
}

func (c *Config) validateKafka() error {
	k := &c.Kafka
	for _, b := range k.Brokers {
		if err := c.hostPort("kafka.brokers", b); err != nil {
			return err
		}
	}
	if err := firstErr(
		c.validTopic("kafka.topic", k.Topic),
		c.validTopic("kafka.dead_letter_topic", k.DeadLetterTopic),
		c.notEmpty("kafka.client_id", k.ClientID, "set a name, like \"binlogsync\""),
		c.oneOf("kafka.compression", k.Compression, "none", "gzip", "snappy", "lz4", "zstd"),
		c.positive("kafka.batch_bytes", k.BatchBytes),
		c.positive("kafka.batch_size", k.BatchSize),
		c.nonNegativeDuration("kafka.batch_timeout", k.BatchTimeout),
		c.oneOf("kafka.required_acks", k.RequiredAcks, "all", "one", "none"),
		c.positive("kafka.max_unacknowledged", k.MaxUnacknowledged),
		c.notEmpty("kafka.group_id", k.GroupID, "set the sinks' consumer group, like \"binlogsync-sink\""),
		c.positiveDuration("kafka.session_timeout", k.SessionTimeout),
		c.nonNegativeDuration("kafka.commit_interval", k.CommitInterval),
		c.positive("kafka.partitions", k.Partitions),
		c.positive("kafka.replication_factor", k.ReplicationFactor),
		c.oneOf("kafka.sasl.mechanism", k.SASL.Mechanism, SASLNone, SASLPlain, SASLScramSHA256, SASLScramSHA512),
	); err != nil {
		return err
	}
	if k.DeadLetterTopic == k.Topic {
		return c.problem("kafka.dead_letter_topic", "kafka.dead_letter_topic is the same as kafka.topic (%s); give the dead letters their own topic", k.Topic)
	}
	if k.SASL.Mechanism == SASLNone {
		if k.SASL.User != "" || k.SASL.Password != "" {
			return c.problem("kafka.sasl.mechanism", "kafka.sasl.user or password is set but kafka.sasl.mechanism is none; set the mechanism (plain, scram-sha-256 or scram-sha-512) or remove the credentials")
		}
	} else if k.SASL.User == "" || k.SASL.Password == "" {
		return c.problem("kafka.sasl.mechanism", "kafka.sasl.mechanism %s needs kafka.sasl.user and kafka.sasl.password (or password_file)", k.SASL.Mechanism)
	}
	return c.validateClientTLS("kafka.tls", &k.TLS)
}

// validTopic checks a Kafka topic name: 1 to 249 of [a-zA-Z0-9._-].
func (c *Config) validTopic(key, t string) error {
	ok := t != "" && len(t) <= 249 && t != "." && t != ".."
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			ok = false
		}
	}
	if !ok {
		return c.problem(key, "%s %q is not a valid Kafka topic; use 1 to 249 letters, digits, '.', '_' or '-'", key, t)
	}
	return nil
}

func (c *Config) validateMisc() error {
	if c.HTTP.Addr != "" {
		if err := c.hostPort("http.addr", c.HTTP.Addr); err != nil {
			return err
		}
	}
	return firstErr(
		c.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error"),
		c.oneOf("log.format", c.Log.Format, "json", "text"),
	)
}

func (c *Config) validateReconcile() error {
	r := &c.Reconcile
	if err := firstErr(
		c.positiveDuration("reconcile.interval", r.Interval),
		c.positive("reconcile.chunk_rows", r.ChunkRows),
		c.positiveDuration("reconcile.chunk_target", r.ChunkTarget),
		c.nonNegativeDuration("reconcile.full_every", r.FullEvery),
		c.nonNegativeDuration("reconcile.schema_check", r.SchemaCheck),
		c.oneOf("reconcile.hash_rows", r.HashRows, "reconciler", "redis"),
		c.notEmpty("reconcile.state_key", r.StateKey, "set the Redis key for the reconciler's state, like \"binlogsync:reconcile\""),
	); err != nil {
		return err
	}
	if r.RateLimitRows < 0 {
		return c.problem("reconcile.rate_limit_rows", "reconcile.rate_limit_rows is %d; use 0 for no limit or a positive number of rows per second", r.RateLimitRows)
	}
	if r.HTTPAddr != "" {
		if err := c.hostPort("reconcile.http_addr", r.HTTPAddr); err != nil {
			return err
		}
		if !loopback(r.HTTPAddr) && r.Token == "" {
			return c.problem("reconcile.http_addr", "reconcile.http_addr %s is reachable from other hosts but reconcile.token is empty; set reconcile.token (or token_file) or listen on 127.0.0.1", r.HTTPAddr)
		}
	}
	return nil
}

// loopback reports whether host:port addr listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *Config) validateLeader() error {
	l := &c.Leader
	if !l.Enabled {
		return nil
	}
	if err := firstErr(
		c.notEmpty("leader.key", l.Key, "set the Redis key of the lease, like \"binlogsync:leader\""),
		c.positiveDuration("leader.ttl", l.TTL),
	); err != nil {
		return err
	}
	if l.TTL < 500*time.Millisecond {
		return c.problem("leader.ttl", "leader.ttl is %s; use at least 500ms so renewals are not lost to ordinary latency", formatDuration(l.TTL))
	}
	if c.Role == RoleSink {
		return c.problem("leader.enabled", "leader.enabled is for processes that read the binlog; sinks share work through the consumer group, so turn it off for role sink")
	}
	if c.Checkpoint.Store != StoreRedis {
		return c.problem("leader.enabled", "leader.enabled needs a checkpoint both processes share; set checkpoint.store: redis")
	}
	return nil
}
