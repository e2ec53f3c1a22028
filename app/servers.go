package app

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/binlogsync/binlogsync/config"
	"github.com/binlogsync/binlogsync/source"
)

// OpenMySQL connects a query pool to the source server and resolves the
// flavor ("auto" is detected).
func OpenMySQL(ctx context.Context, cfg *config.Config) (*sql.DB, string, error) {
	mc := mysql.NewConfig()
	mc.User = cfg.MySQL.User
	mc.Passwd = cfg.MySQL.Password
	mc.Net = "tcp"
	mc.Addr = cfg.MySQL.Addr
	mc.Timeout = cfg.MySQL.ConnectTimeout
	mc.ReadTimeout = 5 * time.Minute
	mc.Params = map[string]string{"time_zone": "'+00:00'"}
	mc.Collation = "utf8mb4_general_ci"
	mc.InterpolateParams = true
	if t := mysqlTLS(cfg); t != nil {
		name := "binlogsync"
		if err := mysql.RegisterTLSConfig(name, t); err != nil {
			return nil, "", exitErr(ExitConfig, fmt.Errorf("mysql.tls: %w", err))
		}
		mc.TLSConfig = name
	}
	connector, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, "", exitErr(ExitConfig, fmt.Errorf("mysql: %w", err))
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(8)
	db.SetConnMaxIdleTime(time.Minute)
	pctx, cancel := context.WithTimeout(ctx, cfg.MySQL.ConnectTimeout+time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, "", exitErr(ExitServer, source.ExplainConnectError(cfg.MySQL.Addr, cfg.MySQL.User, err))
	}
	flavor := cfg.MySQL.Flavor
	detected, err := source.DetectFlavor(ctx, db)
	if err != nil {
		db.Close()
		return nil, "", exitErr(ExitServer, fmt.Errorf("detecting the server flavor: %w", err))
	}
	if flavor == "auto" || flavor == "" {
		flavor = detected
	} else if flavor != detected {
		db.Close()
		return nil, "", exitErr(ExitConfig, fmt.Errorf("mysql.flavor is %q but the server at %s is %s; "+
			"set mysql.flavor: %s (or auto)", flavor, cfg.MySQL.Addr, detected, detected))
	}
	return db, flavor, nil
}

// mysqlTLS builds the TLS configuration for mysql.tls.mode; nil = no TLS.
// Config validation already loaded the files, so errors cannot happen here.
func mysqlTLS(cfg *config.Config) *tls.Config {
	t, _ := cfg.MySQL.TLS.Config(cfg.MySQL.Addr)
	return t
}

// OpenRedis connects to Redis (a cluster when redis.addrs is set) and checks
// that it answers.
func OpenRedis(ctx context.Context, cfg *config.Config) (redis.UniversalClient, error) {
	r := cfg.Redis
	tlsConf, err := r.TLS.Config()
	if err != nil {
		return nil, exitErr(ExitConfig, fmt.Errorf("redis.tls: %w", err))
	}
	// go-redis sizes its default pool by GOMAXPROCS (10 per P), which binlogsync lowers; every lane of the two
	// batches in flight holds a connection, next to the checkpoint store and the leader lease.
	poolSize := r.PoolSize
	if poolSize == 0 {
		poolSize = max(10*runtime.GOMAXPROCS(0), 2*cfg.Sink.Lanes+6)
	}
	var rdb redis.UniversalClient
	if r.Cluster() {
		// go-redis's default of 3 redirects: it also retries a timed-out command that many times within one
		// call, so more hides a frozen master from the sink's own retries (their warning and
		// binlogsync_redis_retries_total) for that many read timeouts. MOVED, ASK and CLUSTERDOWN past them are
		// retried by the sink with backoff.
		rdb = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: r.Addrs, Username: r.Username, Password: r.Password, TLSConfig: tlsConf,
			PoolSize: poolSize, DialTimeout: r.DialTimeout, ReadTimeout: r.ReadTimeout, WriteTimeout: r.WriteTimeout,
			MaxRedirects: 3, DisableIdentity: true,
		})
	} else {
		rdb = redis.NewClient(&redis.Options{
			Addr: r.Addr, Username: r.Username, Password: r.Password, DB: r.DB, TLSConfig: tlsConf,
			PoolSize: poolSize, DialTimeout: r.DialTimeout, ReadTimeout: r.ReadTimeout, WriteTimeout: r.WriteTimeout,
			DisableIdentity: true,
		})
	}
	pctx, cancel := context.WithTimeout(ctx, r.DialTimeout+2*time.Second)
	defer cancel()
	if r.Cluster() {
		if err := checkSeeds(pctx, r, tlsConf); err != nil {
			rdb.Close()
			return nil, exitErr(ExitServer, err)
		}
	}
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, exitErr(ExitServer, explainRedisError(cfg, err))
	}
	return rdb, nil
}

// checkSeeds refuses a seed of redis.addrs that answers as a node of no cluster: no slots and no other node known
// (a node removed with redis-cli --cluster del-node keeps running so). go-redis reads the cluster's slots from a
// seed picked at random, so such a seed failed some starts with "cluster has no nodes" and misrouted others.
// Seeds that do not answer are left to go-redis, which tries the others.
func checkSeeds(ctx context.Context, r config.Redis, tlsConf *tls.Config) error {
	for _, addr := range r.Addrs {
		c := redis.NewClient(&redis.Options{Addr: addr, Username: r.Username, Password: r.Password, TLSConfig: tlsConf,
			DialTimeout: r.DialTimeout, ReadTimeout: r.ReadTimeout, MaxRetries: -1, DisableIdentity: true})
		info, err := c.ClusterInfo(ctx).Result()
		c.Close()
		if err != nil {
			continue
		}
		if strings.Contains(info, "cluster_slots_assigned:0") && strings.Contains(info, "cluster_known_nodes:1\r") {
			return fmt.Errorf("redis.addrs: %s serves no slots and knows no other node, so it is not part of the "+
				"cluster any more (removed with redis-cli --cluster del-node?) or not joined yet: remove it from "+
				"redis.addrs, or add it to the cluster", addr)
		}
	}
	return nil
}

func explainRedisError(cfg *config.Config, err error) error {
	msg := err.Error()
	addr := redisAddr(cfg)
	if source.IsTLSError(err) {
		return fmt.Errorf("redis.tls: the TLS handshake with redis at %s failed (%w); check redis.tls.ca_file "+
			"(the CA that signed the server's certificate), redis.tls.server_name, and redis.tls.cert_file/key_file "+
			"when the server requires client certificates", addr, err)
	}
	switch {
	case strings.Contains(msg, "WRONGPASS"), strings.Contains(msg, "NOAUTH"), strings.Contains(msg, "invalid password"):
		return fmt.Errorf("redis at %s refused the credentials (%s): check redis.username and redis.password", addr, msg)
	case strings.Contains(msg, "connection refused"):
		return fmt.Errorf("redis at %s refused the connection: is Redis running there? check redis.addr", addr)
	case strings.Contains(msg, "i/o timeout"), strings.Contains(msg, "deadline exceeded"):
		return fmt.Errorf("redis at %s did not answer within %s: check redis.addr and the network", addr, cfg.Redis.DialTimeout)
	case strings.Contains(msg, "no such host"):
		return fmt.Errorf("redis host in %q cannot be resolved: check redis.addr", addr)
	case strings.Contains(msg, "DB index is out of range"):
		return fmt.Errorf("redis at %s has no database %d (%s): set redis.db below the server's `databases` "+
			"setting (16 by default)", addr, cfg.Redis.DB, msg)
	}
	return fmt.Errorf("connecting to redis at %s: %w (check redis.addr / redis.addrs)", addr, err)
}

// explainKafkaError names the setting behind a failed first contact with the
// brokers: TLS or SASL; other errors are returned as they are.
func explainKafkaError(cfg *config.Config, err error) error {
	k := &cfg.Kafka
	switch {
	case source.IsTLSError(err):
		return fmt.Errorf("kafka.tls: the TLS handshake with kafka.brokers %v failed (%w); check kafka.tls.ca_file "+
			"(the CA that signed the brokers' certificates), kafka.tls.server_name, and kafka.tls.cert_file/key_file "+
			"when the brokers require client certificates", k.Brokers, err)
	case k.SASL.Mechanism != "" && k.SASL.Mechanism != config.SASLNone &&
		(errors.Is(err, kafkago.SASLAuthenticationFailed) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)):
		return fmt.Errorf("kafka.sasl: the brokers refused or dropped the %s authentication of user %q (%w); check "+
			"kafka.sasl.user, kafka.sasl.password and kafka.sasl.mechanism", k.SASL.Mechanism, k.SASL.User, err)
	}
	var netErr net.Error
	if !errors.As(err, &netErr) && !strings.Contains(err.Error(), "dial") {
		return err // the brokers answered (authorization, a missing topic, ...): the error says what
	}
	return fmt.Errorf("%w; check kafka.brokers (host:port of brokers this process can reach, as their "+
		"advertised.listeners name them) and that the brokers are running", err)
}
