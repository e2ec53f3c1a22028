package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/binlogsync/binlogsync/change"
	"github.com/binlogsync/binlogsync/checkpoint"
	"github.com/binlogsync/binlogsync/config"
	"github.com/binlogsync/binlogsync/metrics"
	"github.com/binlogsync/binlogsync/pipeline"
	"github.com/binlogsync/binlogsync/source"
	"github.com/binlogsync/binlogsync/transport/kafka"
)

// runKafka runs the halves of the pipeline that cfg.Role names over the
// Kafka transport: the source publishes and checkpoints what Kafka
// acknowledged; the sink consumes as a group member and commits offsets
// after the Redis writes (its offsets are its checkpoint).
func runKafka(ctx context.Context, cfg *config.Config, log *slog.Logger, opts Options) error {
	runSource := cfg.Role == config.RoleAll || cfg.Role == config.RoleSource
	runSink := cfg.Role == config.RoleAll || cfg.Role == config.RoleSink
	log = log.With(slog.String("role", cfg.Role))
	startCtx, cancelStart := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelStart()

	common, err := kafkaCommon(cfg, log)
	if err != nil {
		return exitErr(ExitConfig, err)
	}

	var db *sql.DB
	var flavor string
	if runSource {
		if db, flavor, err = OpenMySQL(startCtx, cfg); err != nil {
			return err
		}
		defer db.Close()
		log = log.With(slog.String("flavor", flavor))
		problems, err := source.Preflight(startCtx, db, preflightOptions(cfg, flavor))
		if err != nil {
			return exitErr(ExitServer, fmt.Errorf("checking the server settings: %w", err))
		}
		if err := reportProblems(log, problems); err != nil {
			return err
		}
	}
	// The sink writes to Redis; the source needs it only for a Redis checkpoint
	// or to bootstrap (the initial load goes straight to Redis, fenced).
	var rdb redis.UniversalClient
	if runSink || cfg.Checkpoint.Store == config.StoreRedis || (runSource && cfg.Bootstrap) {
		if rdb, err = OpenRedis(startCtx, cfg); err != nil {
			return err
		}
		defer rdb.Close()
	}

	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	var queue chan *change.Batch
	var queueLen func() float64
	if runSource {
		queue = make(chan *change.Batch, cfg.Sink.QueueBatches)
		queueLen = func() float64 { return float64(len(queue)) }
	}
	m := metrics.New(reg, queueLen)

	var prod *kafka.Producer
	var unacked func() float64
	if runSource {
		prod, err = kafka.NewProducer(kafka.ProducerConfig{
			Common:       common,
			Compression:  cfg.Kafka.Compression,
			BatchBytes:   cfg.Kafka.BatchBytes,
			BatchSize:    cfg.Kafka.BatchSize,
			BatchTimeout: cfg.Kafka.BatchTimeout,
			RequiredAcks: cfg.Kafka.RequiredAcks,
			MaxInFlight:  cfg.Kafka.MaxUnacknowledged,
		})
		if err != nil {
			return exitErr(ExitConfig, err)
		}
		unacked = prod.InFlight
	}
	km := metrics.NewKafka(reg, unacked)
	common.Metrics = km
	if prod != nil {
		// The producer was built before its metrics existed.
		prod.SetMetrics(km)
	}

	var cons *kafka.Consumer
	if runSink {
		snk, err := NewSink(cfg, rdb, log, m)
		if err != nil {
			return exitErr(ExitConfig, err)
		}
		cons, err = kafka.NewConsumer(kafka.ConsumerConfig{
			Common:          common,
			GroupID:         cfg.Kafka.GroupID,
			SessionTimeout:  cfg.Kafka.SessionTimeout,
			CommitInterval:  cfg.Kafka.CommitInterval,
			DeadLetterTopic: cfg.Kafka.DeadLetterTopic,
			MaxBatch:        max(cfg.Sink.BatchRows*2, 1),
			ShutdownTimeout: cfg.ShutdownTimeout,
			Pipeline:        m,
			Selected:        cfg.TableSelected,
		}, snk)
		if err != nil {
			return exitErr(ExitConfig, err)
		}
		if err := cons.Check(startCtx); err != nil {
			return exitErr(ExitServer, explainKafkaError(cfg, err))
		}
	}
	if prod != nil {
		if err := prod.Check(startCtx); err != nil {
			return exitErr(ExitServer, explainKafkaError(cfg, err))
		}
	}
	if opts.CheckOnly {
		if runSource {
			if err := checkResume(startCtx, cfg, opts, db, flavor, rdb); err != nil {
				return err
			}
		}
		log.Info("all checks passed", slog.Any("brokers", cfg.Kafka.Brokers))
		return nil
	}

	// HTTP comes up before the lease and the bootstrap, so a standby or a long
	// initial load is observable (/readyz answers 503 until streaming).
	var ready readiness
	if cfg.HTTP.Addr != "" {
		srv, err := serveHTTP(cfg.HTTP.Addr, reg, &ready, rdb, log)
		if err != nil {
			return exitErr(ExitConfig, err)
		}
		defer srv.Close()
	}

	// The source half: checkpoint, start position, binlog source.
	var (
		store checkpoint.Store
		start change.Position
		src   *source.Source
		ckpt  *pipeline.Checkpointer
	)
	if runSource {
		var release func()
		if ctx, release, err = lead(ctx, cfg, rdb, log); err != nil {
			if ctx.Err() != nil {
				return nil // stopped while standing by
			}
			return err
		}
		defer release()
		startCtx, cancelStart = context.WithTimeout(ctx, 2*time.Minute) // a standby may have waited long
		defer cancelStart()
		if store, err = OpenCheckpoint(cfg, rdb); err != nil {
			return err
		}
		defer store.Close()
		identity, err := serverIdentity(startCtx, db, flavor)
		if err != nil {
			return exitErr(ExitServer, err)
		}
		var trackGTID bool
		var stored change.Position
		if start, trackGTID, stored, err = startPosition(startCtx, cfg, opts, db, flavor, store, identity, log,
			bootstrapper(ctx, cfg, db, flavor, rdb, log)); err != nil {
			return err
		}
		m.CheckpointStart(start)
		src = newSource(cfg, db, flavor, start, trackGTID, identity, schemaStore(cfg, opts, store, stored), log, m, &ready)
		ckpt = &pipeline.Checkpointer{Store: store, Interval: cfg.Checkpoint.Interval, Metrics: m,
			Log: log.With(slog.String("component", "checkpoint"))}
		ckpt.Start()
	}

	runCtx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	// The producer outlives a stop by up to shutdown_timeout, to have the
	// queued changes acknowledged before the final checkpoint.
	prodCtx, cancelProd := context.WithCancel(context.Background())
	defer cancelProd()
	stopTimer := context.AfterFunc(runCtx, func() { time.AfterFunc(cfg.ShutdownTimeout, cancelProd) })
	defer stopTimer()

	srcErr := make(chan error, 1)
	prodErr := make(chan error, 1)
	consErr := make(chan error, 1)
	if runSource {
		go func() {
			err := src.Run(runCtx, start, queue)
			close(queue) // the producer publishes what is queued, then returns
			srcErr <- err
		}()
		named := start
		if named.File == "" {
			// A GTID start: the messages name binlog files from their sequence numbers, with the server's
			// base name.
			if cur, err := source.CurrentPosition(startCtx, db, flavor); err == nil {
				named.File = cur.File
			} else {
				log.Warn("reading the binlog file name for the messages failed; the first transaction's "+
					"messages name no file", slog.String("error", err.Error()))
			}
		}
		go func() { prodErr <- prod.Run(prodCtx, named, queue, ckpt.Advance) }()
		log.Info("streaming", slog.String("file", start.File), slog.Uint64("pos", uint64(start.Pos)),
			slog.String("gtid_set", start.GTIDSet), slog.String("topic", cfg.Kafka.Topic),
			slog.Any("brokers", cfg.Kafka.Brokers))
	}
	if runSink {
		go func() { consErr <- cons.Run(runCtx) }()
		log.Info("streaming", slog.String("group_id", cfg.Kafka.GroupID), slog.String("topic", cfg.Kafka.Topic),
			slog.Any("brokers", cfg.Kafka.Brokers), slog.String("redis", redisAddr(cfg)))
	}
	ready.streaming.Store(true)
	if opts.Ready != nil {
		opts.Ready()
	}

	var runErr error
	setErr := func(err error) {
		if err != nil && runErr == nil {
			runErr = err
		}
	}
	srcDone, prodDone, consDone := !runSource, !runSource, !runSink
	for !srcDone || !prodDone || !consDone {
		select {
		case <-ctx.Done():
			log.Info("stopping: finishing the messages in flight", slog.Duration("timeout", cfg.ShutdownTimeout))
			stopAll()
			ctx = context.Background() // seen once
		case err := <-srcErr:
			srcDone = true
			if runCtx.Err() == nil { // stopped by itself: let the producer publish what it read
				setErr(classifySourceError(err))
				stopAll()
			}
		case err := <-prodErr:
			prodDone = true
			if err != nil && !errors.Is(err, context.Canceled) {
				setErr(exitErr(ExitRuntime, fmt.Errorf("publishing to kafka: %w", err)))
			} else if err != nil && runErr == nil {
				log.Warn("stopped before kafka acknowledged every message; they are sent again after a restart")
			}
			stopAll()
		case err := <-consErr:
			consDone = true
			if err != nil {
				setErr(exitErr(ExitRuntime, err))
			}
			stopAll()
		}
	}
	ready.streaming.Store(false)
	if ckpt != nil {
		if err := ckpt.Close(); err != nil {
			log.Error("storing the final checkpoint failed", slog.String("error", err.Error()))
			setErr(exitErr(ExitRuntime, err))
		}
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := prod.Close(closeCtx); err != nil {
			log.Warn("closing the kafka producer", slog.String("error", err.Error()))
		}
		cancel()
		saved := ckpt.Saved()
		log.Info("stopped", slog.String("checkpoint_file", saved.File), slog.Uint64("checkpoint_pos", uint64(saved.Pos)))
	} else {
		log.Info("stopped")
	}
	return leaseErr(ctx, runErr)
}

// kafkaCommon is the producer's and consumer's shared configuration.
func kafkaCommon(cfg *config.Config, log *slog.Logger) (kafka.Common, error) {
	k := &cfg.Kafka
	tlsCfg, err := k.TLS.Config()
	if err != nil {
		return kafka.Common{}, fmt.Errorf("kafka.tls: %w", err)
	}
	var mech sasl.Mechanism
	switch k.SASL.Mechanism {
	case config.SASLPlain:
		mech = plain.Mechanism{Username: k.SASL.User, Password: k.SASL.Password}
	case config.SASLScramSHA256, config.SASLScramSHA512:
		algo := scram.SHA256
		if k.SASL.Mechanism == config.SASLScramSHA512 {
			algo = scram.SHA512
		}
		if mech, err = scram.Mechanism(algo, k.SASL.User, k.SASL.Password); err != nil {
			return kafka.Common{}, fmt.Errorf("kafka.sasl: %w", err)
		}
	}
	return kafka.Common{
		Brokers:           k.Brokers,
		Topic:             k.Topic,
		TopicPerTable:     k.TopicPerTable,
		ClientID:          k.ClientID,
		CreateTopic:       k.CreateTopic,
		Partitions:        k.Partitions,
		ReplicationFactor: k.ReplicationFactor,
		TLS:               tlsCfg,
		SASL:              mech,
		Log:               log.With(slog.String("component", "kafka")),
	}, nil
}
