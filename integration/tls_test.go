package integration

import (
	"context"
	"database/sql"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

// Passwords of the accounts the TLS tests create; none may show in the log.
const (
	tlsMySQLPassword = "my-Pw-4b1d93"
	tlsRedisPassword = "rd-Pw-8c2e71"
	tlsRedisAdminPw  = "admin-Pw-0a9f"
	tlsKafkaPassword = "kf-Pw-5e7d20"
)

// tlsEnv is an env whose MariaDB accepts only TLS over TCP
// (require_secure_transport) and whose binlogsync account must present the
// client certificate (REQUIRE SUBJECT), and whose Redis speaks only TLS,
// requires client certificates and has its default user switched off:
// binlogsync authenticates as the ACL user "binlogsync". The test's own
// connections use the unix socket (MariaDB) and an admin ACL user (Redis).
func tlsEnv(t *testing.T, certs *testenv.Certs) *env {
	t.Helper()
	my := testenv.NewMariaDB(t, testenv.MariaDBOptions{ExtraArgs: certs.MariaDBArgs()})
	rd := testenv.NewTLSRedis(t, certs)
	e := &env{t: t, my: my, rd: rd, extra: map[string]string{}}
	e.db = my.NewDatabase(t)
	e.ckpt = filepath.Join(t.TempDir(), "checkpoint")

	sock, err := sql.Open("mysql", "root:"+my.RootPassword+"@unix("+filepath.Join(my.Dir, "mysqld.sock")+")/"+e.db+
		"?multiStatements=true&interpolateParams=true")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	e.sqldb = sock
	var ssl string
	if err := sock.QueryRow("SELECT @@have_ssl").Scan(&ssl); err != nil || ssl != "YES" {
		t.Fatalf("MariaDB did not enable TLS with the generated certificates: have_ssl=%q, %v", ssl, err)
	}
	e.exec("CREATE USER 'bls_tls'@'%' IDENTIFIED BY '"+tlsMySQLPassword+"' REQUIRE SUBJECT '/CN="+testenv.ClientCN+"'",
		"GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'bls_tls'@'%'",
		"SET GLOBAL require_secure_transport = ON")
	plain, err := sql.Open("mysql", my.DSN("root", my.RootPassword, ""))
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Ping(); err == nil {
		t.Fatalf("MariaDB still accepts plain-text TCP connections")
	}
	plain.Close()

	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: rd.Addr(), TLSConfig: certs.ClientTLS(), DisableIdentity: true})
	for _, cmd := range [][]any{
		{"ACL", "SETUSER", "admin", "on", ">" + tlsRedisAdminPw, "~*", "&*", "+@all"},
		{"ACL", "SETUSER", "binlogsync", "on", ">" + tlsRedisPassword, "~*", "+@all"},
		{"ACL", "SETUSER", "default", "off"},
	} {
		if err := admin.Do(ctx, cmd...).Err(); err != nil {
			t.Fatalf("%v: %v", cmd[:3], err)
		}
	}
	admin.Close()
	e.rdb = redis.NewClient(&redis.Options{Addr: rd.Addr(), TLSConfig: certs.ClientTLS(), DisableIdentity: true,
		Username: "admin", Password: tlsRedisAdminPw})
	t.Cleanup(func() { e.rdb.Close() })
	if err := e.rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("the admin ACL user cannot connect: %v", err)
	}

	for k, v := range map[string]string{
		"BINLOGSYNC_MYSQL_USER":            "bls_tls",
		"BINLOGSYNC_MYSQL_PASSWORD":        tlsMySQLPassword,
		"BINLOGSYNC_MYSQL_TLS_MODE":        "verify-identity",
		"BINLOGSYNC_MYSQL_TLS_CA_FILE":     certs.CAFile,
		"BINLOGSYNC_MYSQL_TLS_CERT_FILE":   certs.ClientCert,
		"BINLOGSYNC_MYSQL_TLS_KEY_FILE":    certs.ClientKey,
		"BINLOGSYNC_REDIS_USERNAME":        "binlogsync",
		"BINLOGSYNC_REDIS_PASSWORD":        tlsRedisPassword,
		"BINLOGSYNC_REDIS_TLS_ENABLED":     "true",
		"BINLOGSYNC_REDIS_TLS_CA_FILE":     certs.CAFile,
		"BINLOGSYNC_REDIS_TLS_CERT_FILE":   certs.ClientCert,
		"BINLOGSYNC_REDIS_TLS_KEY_FILE":    certs.ClientKey,
		"BINLOGSYNC_MYSQL_CONNECT_TIMEOUT": "5s",
		"BINLOGSYNC_REDIS_DIAL_TIMEOUT":    "2s",
	} {
		e.extra[k] = v
	}
	return e
}

// snapshotVia reads every row of table (primary key id) through db:
// key -> column -> value, NULL columns absent, as snapshotMySQL does.
func (e *env) snapshotVia(db *sql.DB, table string) map[string]map[string]string {
	e.t.Helper()
	rows, err := db.Query("SELECT * FROM `" + table + "`")
	if err != nil {
		e.t.Fatalf("reading %s: %v", table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for rows.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			e.t.Fatal(err)
		}
		m := map[string]string{}
		for i, v := range vals {
			if v != nil {
				m[cols[i]] = string(v)
			}
		}
		out[e.db+":"+table+":"+m["id"]] = m
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// waitSameVia is waitSame for a table with primary key id, reading MySQL
// through e.sqldb (the unix socket when plain TCP is refused).
func (e *env) waitSameVia(table string, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		want := e.snapshotVia(e.sqldb, table)
		got, _ := e.snapshotRedis(table)
		d := diff(want, got, nil)
		if len(d) == 0 {
			if len(want) == 0 {
				e.t.Fatalf("%s is empty: the comparison proves nothing", table)
			}
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("Redis differs from MySQL for %s.%s after %s:\n%s", e.db, table, timeout, strings.Join(d, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runWith runs binlogsync with the overrides, expecting it to exit by
// itself, and returns its exit code and output.
func (e *env) runWith(overrides map[string]string, within time.Duration) (int, string) {
	e.t.Helper()
	saved := maps.Clone(e.extra)
	maps.Copy(e.extra, overrides)
	p := e.spawn("--config", "../config.example.yaml")
	e.extra = saved
	code := p.wait(e.t, within)
	return code, p.Log()
}

// errorLine is the last line of binlogsync's output: the error it stopped with.
func errorLine(log string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	return lines[len(lines)-1]
}

// noSecrets fails the test when a password shows in the output.
func noSecrets(t *testing.T, what, log string) {
	t.Helper()
	for _, s := range []string{tlsMySQLPassword, tlsRedisPassword, tlsRedisAdminPw, tlsKafkaPassword, "wrong-" + tlsKafkaPassword} {
		if strings.Contains(log, s) {
			t.Errorf("%s: a password shows in the output", what)
		}
	}
}

// Embedded mode over mutual TLS to a MariaDB that refuses plain text and to
// a TLS-only Redis, as a Redis ACL user; then misconfigurations that must
// stop binlogsync with the documented exit code and the key to fix.
func TestTLSEmbeddedMariaDBAndRedisWithACLUser(t *testing.T) {
	certs := testenv.NewCerts(t)
	e := tlsEnv(t, certs)
	e.exec(usersDDL)
	p := e.start("--config", "../config.example.yaml")
	e.exec("BEGIN",
		"INSERT INTO users VALUES (1,'ann',1.50,NULL,NOW(6)),(2,'bob',2.00,'x',NOW(6)),(3,'cy',3.25,'',NOW(6))",
		"UPDATE users SET name = 'bobby', note = NULL WHERE id = 2",
		"DELETE FROM users WHERE id = 3",
		"COMMIT",
		"INSERT INTO users VALUES (4,'dee',4.00,'after the transaction',NOW(6))")
	e.waitSameVia("users", 30*time.Second)
	got, _ := e.snapshotRedis("users")
	if len(got) != 3 || got[e.db+":users:2"]["name"] != "bobby" {
		t.Fatalf("Redis holds %v", got)
	}

	// The replication stream is the certificate-authenticated account's (so
	// it runs over TLS: the server refuses that account otherwise), and the
	// Redis connections are the ACL user's.
	var dumpUser string
	if err := e.sqldb.QueryRow("SELECT USER FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'").
		Scan(&dumpUser); err != nil || dumpUser != "bls_tls" {
		t.Errorf("Binlog Dump thread user = %q, %v; want bls_tls", dumpUser, err)
	}
	clients, err := e.rdb.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(clients, "user=binlogsync") || strings.Contains(clients, "user=default") {
		t.Errorf("Redis clients are not binlogsync's ACL user:\n%s", clients)
	}
	if code := p.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d", code)
	}
	noSecrets(t, "streaming run", p.Log())

	other := testenv.NewCerts(t) // a CA that signed nothing these servers present
	for _, c := range []struct {
		name      string
		overrides map[string]string
		code      int
		want      []string // all of these in the output
	}{
		{"mysql.tls.ca_file of another CA", map[string]string{"BINLOGSYNC_MYSQL_TLS_CA_FILE": other.CAFile},
			3, []string{"mysql.tls", "certificate"}},
		{"mysql.tls.server_name that the certificate does not name",
			map[string]string{"BINLOGSYNC_MYSQL_TLS_SERVER_NAME": "db.example.com"},
			3, []string{"mysql.tls", "db.example.com"}},
		{"mysql.tls.ca_file missing", map[string]string{"BINLOGSYNC_MYSQL_TLS_CA_FILE": filepath.Join(certs.Dir, "nope.pem")},
			2, []string{"mysql.tls.ca_file", "nope.pem"}},
		{"redis.tls.ca_file of another CA", map[string]string{"BINLOGSYNC_REDIS_TLS_CA_FILE": other.CAFile},
			3, []string{"redis.tls", "certificate"}},
		{"redis.password wrong", map[string]string{"BINLOGSYNC_REDIS_PASSWORD": "wrong-" + tlsRedisPassword},
			3, []string{"redis.password", "redis.username"}},
	} {
		code, log := e.runWith(c.overrides, 60*time.Second)
		if code != c.code {
			t.Errorf("%s: exit code %d, want %d; output:\n%s", c.name, code, c.code, tail(log, 2000))
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(log, w) {
				t.Errorf("%s: the output does not name %q:\n%s", c.name, w, tail(log, 2000))
			}
		}
		noSecrets(t, c.name, log)
		t.Logf("%s: exit %d: %s", c.name, code, errorLine(log))
	}

	// verify-ca checks the chain but not the name: a wrong server_name passes.
	e.extra["BINLOGSYNC_MYSQL_TLS_MODE"] = "verify-ca"
	e.extra["BINLOGSYNC_MYSQL_TLS_SERVER_NAME"] = "db.example.com"
	p = e.start("--config", "../config.example.yaml")
	e.exec("INSERT INTO users VALUES (5,'eve',5.00,'verify-ca',NOW(6))")
	e.waitSameVia("users", 30*time.Second)
	if code := p.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("verify-ca: exit code after SIGTERM = %d", code)
	}
}

// Kafka transport (role all) to a broker that speaks only TLS, requires a
// client certificate and SASL: with each mechanism rows arrive in Redis, and
// a wrong SASL password (or, once, a wrong CA) stops binlogsync with exit
// code 3 and a message naming the setting to fix.
func TestTLSKafkaSASL(t *testing.T) {
	certs := testenv.NewCerts(t)
	for _, m := range []struct{ kfake, config string }{
		{"PLAIN", "plain"},
		{"SCRAM-SHA-256", "scram-sha-256"},
		{"SCRAM-SHA-512", "scram-sha-512"},
	} {
		t.Run(m.config, func(t *testing.T) {
			e := sharedEnv(t)
			brokers := newKfake(t, kfake.TLS(certs.ServerTLS(true)), kfake.EnableSASL(),
				kfake.Superuser(m.kfake, "bls-kafka", tlsKafkaPassword))
			topic := "bs-auth-" + strings.ReplaceAll(m.config, "-", "")
			e.kafkaEnv(brokers, topic)
			maps.Copy(e.extra, map[string]string{
				"BINLOGSYNC_KAFKA_TLS_ENABLED":    "true",
				"BINLOGSYNC_KAFKA_TLS_CA_FILE":    certs.CAFile,
				"BINLOGSYNC_KAFKA_TLS_CERT_FILE":  certs.ClientCert,
				"BINLOGSYNC_KAFKA_TLS_KEY_FILE":   certs.ClientKey,
				"BINLOGSYNC_KAFKA_SASL_MECHANISM": m.config,
				"BINLOGSYNC_KAFKA_SASL_USER":      "bls-kafka",
				"BINLOGSYNC_KAFKA_SASL_PASSWORD":  tlsKafkaPassword,
			})
			e.exec(usersDDL)
			p := e.startRole("all")
			e.exec("INSERT INTO users VALUES (1,'ann',1.50,NULL,NOW(6)),(2,'bob',2.00,'x',NOW(6))",
				"UPDATE users SET score = 9.75 WHERE id = 1",
				"INSERT INTO users VALUES (3,'cy',3.25,'',NOW(6))",
				"DELETE FROM users WHERE id = 2")
			e.waitSame("users", 45*time.Second, nil, "id")
			if v := p.metric(t, "binlogsync_kafka_produced_messages_total"); v < 4 {
				t.Errorf("produced %v messages, want at least 4: the rows did not go through Kafka", v)
			}
			if code := p.stop(t, 20*time.Second); code != 0 {
				t.Fatalf("exit code after SIGTERM = %d", code)
			}
			noSecrets(t, m.config, p.Log())

			code, log := e.runWith(map[string]string{"BINLOGSYNC_KAFKA_SASL_PASSWORD": "wrong-" + tlsKafkaPassword},
				90*time.Second)
			if code != 3 {
				t.Errorf("wrong kafka.sasl.password: exit code %d, want 3; output:\n%s", code, tail(log, 2000))
			}
			// SPEC section 6: the message names the setting to fix. (The topic
			// and broker names hold no "sasl" that could satisfy this.)
			if !strings.Contains(log, "kafka.sasl") {
				t.Errorf("wrong kafka.sasl.password: the output does not name kafka.sasl:\n%s", tail(log, 2000))
			}
			noSecrets(t, m.config+" wrong password", log)
			t.Logf("wrong kafka.sasl.password: exit %d: %s", code, errorLine(log))

			if m.config != "plain" {
				return // the TLS check does not depend on the mechanism
			}
			code, log = e.runWith(map[string]string{"BINLOGSYNC_KAFKA_TLS_CA_FILE": testenv.NewCerts(t).CAFile},
				90*time.Second)
			if code != 3 {
				t.Errorf("kafka.tls.ca_file of another CA: exit code %d, want 3; output:\n%s", code, tail(log, 2000))
			}
			if !strings.Contains(log, "kafka.tls") {
				t.Errorf("kafka.tls.ca_file of another CA: the output does not name kafka.tls:\n%s", tail(log, 2000))
			}
			t.Logf("kafka.tls.ca_file of another CA: exit %d: %s", code, errorLine(log))
		})
	}
}
