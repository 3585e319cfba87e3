package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/store"
)

// defaultRules is the example the service runs when given none: the one
// with rules, a mapping table and a team.
const defaultRules = "rules/examples/segment-table"

func runServe(args []string, stderr io.Writer) int {
	fl := flag.NewFlagSet("serve", flag.ContinueOnError)
	fl.SetOutput(stderr)
	rules := fl.String("rules", defaultRules, "rule set `directory`")
	addr := fl.String("addr", "127.0.0.1:8080", "address to listen on")
	data := fl.String("data", "switchboard.db", "SQLite database `file` (created if missing)")
	token := fl.String("token", os.Getenv("SWITCHBOARD_TOKEN"), "bearer token every /v1 call must present (default $SWITCHBOARD_TOKEN)")
	seed := fl.Uint64("seed", 0, "seed for the random algorithm")
	verbose := fl.Bool("v", false, "log every request")
	watch := fl.Bool("watch", false, "reload the rules when their files change")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: switchboard serve [--rules DIR] [--addr HOST:PORT] [--data FILE] [--token TOKEN]\n\nRuns the routing service: POST events to /v1/events, get decisions back once they are durable.")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	rs := loadRules(*rules, stderr)
	if rs == nil {
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, err := store.OpenSQLite(ctx, *data)
	if err != nil {
		log.Error("cannot open the store", "data", *data, "err", err)
		return 1
	}
	defer st.Close()
	load := func() (*dsl.RuleSet, dsl.Diagnostics) { return dsl.Load(*rules) }
	svc, err := service.New(ctx, service.Config{Rules: rs, Load: load, Store: st, Token: *token, Log: log, Seed: *seed})
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	// SIGHUP, and with --watch a change to the files, reload the rules.
	reload := func(why string) {
		res, err := svc.Reload(ctx)
		for _, d := range res.Diagnostics {
			log.Warn("rules", "diagnostic", d.String())
		}
		if err != nil {
			log.Error("reload", "why", why, "err", err)
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			reload("SIGHUP")
		}
	}()
	if *watch {
		go watchRules(ctx, *rules, func() { reload("files changed") })
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Error("cannot listen", "addr", *addr, "err", err)
		return 1
	}
	srv := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second}
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { svc.Run(runCtx); close(runDone) }()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("serving", "addr", ln.Addr().String(), "rules", *rules, "version", rs.Version, "data", *data, "auth", *token != "")

	code := 0
	select {
	case <-ctx.Done():
		log.Info("stopping: finishing requests in flight")
	case err := <-serveErr:
		log.Error("server failed", "err", err)
		code = 1
	}
	// Answer what is in flight (the commit loop still runs), then stop it.
	shutdown, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("shutdown", "err", err)
		code = 1
	}
	stopRun()
	<-runDone
	log.Info("stopped")
	return code
}

// watchRules calls changed when the rule set's files change, checking every
// second: names, sizes and modification times.
func watchRules(ctx context.Context, dir string, changed func()) {
	last := fingerprint(dir)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if fp := fingerprint(dir); fp != last {
			last = fp
			changed()
		}
	}
}

func fingerprint(dir string) string {
	entries, _ := os.ReadDir(dir)
	var b strings.Builder
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || e.IsDir() {
			continue
		}
		fmt.Fprintf(&b, "%s %d %d\n", e.Name(), info.Size(), info.ModTime().UnixNano())
	}
	return b.String()
}
