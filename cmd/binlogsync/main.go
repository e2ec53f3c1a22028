// Command binlogsync keeps Redis in step with MySQL/MariaDB by tailing the
// binlog. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/binlogsync/binlogsync/app"
	"github.com/binlogsync/binlogsync/config"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("binlogsync", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "YAML configuration file (keys can be overridden by BINLOGSYNC_* environment variables)")
	check := fs.Bool("check", false, "check the configuration, the servers' settings and privileges, then exit")
	startFile := fs.String("start-file", "", "start from this binlog file instead of the checkpoint")
	startPos := fs.Uint("start-pos", 4, "with --start-file: the byte offset (a transaction boundary)")
	startGTID := fs.String("start-gtid", "", "start after this GTID set instead of the checkpoint")
	printConfig := fs.Bool("print-config", false, "print the effective configuration (secrets redacted) and exit")
	healthcheck := fs.String("healthcheck", "", "GET this URL (e.g. http://127.0.0.1:9090/readyz) and exit 0 on 200, 1 otherwise; for container health checks")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return app.ExitConfig
	}
	if *healthcheck != "" {
		return probe(*healthcheck)
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		fmt.Fprintln(os.Stderr, "binlogsync: configuration error:", err)
		return app.ExitConfig
	}
	if *printConfig {
		fmt.Print(cfg.Redacted())
		return app.ExitOK
	}
	log := app.NewLogger(cfg)
	if app.DefaultGC(os.Getenv) {
		log.Debug("garbage collector target set; set GOGC to choose", slog.Int("gogc", app.DefaultGCPercent))
	}
	if cfg.Transport.Kind == config.TransportEmbedded {
		procs, changed := app.DefaultProcs(os.Getenv)
		app.LogProcs(log, procs, changed)
	}
	opts := app.Options{CheckOnly: *check}
	posSet := false
	fs.Visit(func(f *flag.Flag) { posSet = posSet || f.Name == "start-pos" })
	switch {
	case posSet && *startFile == "":
		return flagError("--start-pos needs --start-file (SHOW BINARY LOGS lists the files)")
	case *startGTID != "" && *startFile != "":
		return flagError("--start-gtid and --start-file are both given; start either by GTID set or by file and position")
	case *startGTID != "" && !config.ValidGTIDSet(*startGTID):
		return flagError(fmt.Sprintf("--start-gtid %q is not a GTID set; write it as the server shows it "+
			"(MariaDB: 0-1-1000,1-2-50; MySQL: 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77)", *startGTID))
	case *startPos > math.MaxUint32:
		return flagError(fmt.Sprintf("--start-pos %d is beyond any binlog offset", *startPos))
	}
	if *startFile != "" || *startGTID != "" {
		opts.Start = config.Start{File: *startFile, Pos: uint32(*startPos), GTIDSet: *startGTID}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg, log, opts); err != nil {
		code := app.ExitRuntime
		var ee *app.ExitError
		if errors.As(err, &ee) {
			code = ee.Code
		}
		// One message: the log (on stderr) carries the error and the exit code.
		log.Error("binlogsync stopped", slog.String("error", err.Error()), slog.Int("exit_code", code))
		return code
	}
	return app.ExitOK
}

// flagError reports a bad command-line flag; nothing has been touched.
func flagError(msg string) int {
	fmt.Fprintln(os.Stderr, "binlogsync: "+msg)
	return app.ExitConfig
}

// probe is the container health check: the image has no curl.
func probe(url string) int {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "healthcheck:", resp.Status)
		return 1
	}
	return 0
}
