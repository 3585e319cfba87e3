package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-dev/switchboard/console"
	deliverypkg "github.com/switchboard-dev/switchboard/delivery"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/store"
)

// defaultRules is the example the service runs when given none: the one
// with rules, a mapping table and a team.
const defaultRules = "rules/examples/segment-table"

// minToken is the shortest token serve takes without a warning: 16
// random characters are beyond guessing over HTTP.
const minToken = 16

func runServe(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("serve", flag.ContinueOnError)
	fl.SetOutput(stderr)
	rules := fl.String("rules", defaultRules, "rule set `directory`")
	addr := fl.String("addr", "127.0.0.1:8080", "address to listen on")
	data := fl.String("data", "switchboard.db", "SQLite database `file` (created if missing), or a postgres:// URL that several instances share (default $SWITCHBOARD_DATABASE_URL when set)")
	token := fl.String("token", os.Getenv("SWITCHBOARD_TOKEN"), "bearer token every /v1 call must present (default $SWITCHBOARD_TOKEN)")
	seed := fl.Uint64("seed", 0, "seed for the random algorithm")
	verbose := fl.Bool("v", false, "log every request")
	watch := fl.Bool("watch", false, "reload the rules when their files change")
	retain := fl.String("retain", "", "prune events older than this `duration` (e.g. 90d, 12h) once a snapshot covers them; default: keep all")
	snapEvery := fl.Int64("snapshot-every", 10_000, "take a snapshot of the state after this many `records`")
	snapInterval := fl.Duration("snapshot-interval", time.Minute, "take a snapshot at least this often while events come")
	readTimeout := fl.Duration("read-timeout", time.Minute, "longest time to read a request, body included")
	config := fl.String("config", os.Getenv("SWITCHBOARD_CONFIG"), "configuration `file`: where decisions, webhooks and emails go (default $SWITCHBOARD_CONFIG; none: decisions are only streamed)")
	grace := fl.Duration("shutdown-grace", 5*time.Second, "on SIGTERM, how long requests in flight may take before their connections are closed (at most 8s)")
	fl.Usage = func() {
		fmt.Fprintln(fl.Output(), "usage: switchboard serve [--rules DIR] [--addr HOST:PORT] [--data FILE | --data postgres://...] [--token TOKEN] [--retain DURATION]\n\nRuns the routing service: POST events to /v1/events, get decisions back once they are durable.")
		fl.PrintDefaults()
	}
	if code, done := parseFlags(fl, args, stdout); done {
		return code
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	var retention time.Duration
	if *retain != "" {
		var err error
		if retention, err = parseDays(*retain); err != nil || retention <= 0 {
			fmt.Fprintf(stderr, "switchboard serve: --retain %q: write a positive duration such as 90d, 36h or 30m, at most 36500d\n", *retain)
			return 2
		}
	}
	switch {
	case *snapEvery < 1:
		fmt.Fprintf(stderr, "switchboard serve: --snapshot-every %d: write a number of records, 1 or more\n", *snapEvery)
		return 2
	case *snapInterval <= 0:
		fmt.Fprintf(stderr, "switchboard serve: --snapshot-interval %v: write a positive duration such as 1m\n", *snapInterval)
		return 2
	case *readTimeout <= 0:
		fmt.Fprintf(stderr, "switchboard serve: --read-timeout %v: write a positive duration such as 1m\n", *readTimeout)
		return 2
	case !strings.Contains(*addr, ":"):
		fmt.Fprintf(stderr, "switchboard serve: --addr %s: write HOST:PORT, e.g. 127.0.0.1:%s (or :%s for every interface)\n", *addr, *addr, *addr)
		return 2
	case *grace < 0:
		fmt.Fprintf(stderr, "switchboard serve: --shutdown-grace %v: write a duration such as 5s\n", *grace)
		return 2
	}

	if !flagSet(fl, "rules") {
		if _, err := os.Stat(defaultRules); errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "switchboard serve: no --rules given, and the default rule set %s is not here (it comes with the Switchboard repository; run serve from its root)\npass your rule set's directory: switchboard serve --rules DIR\n", defaultRules)
			return 2
		}
	}
	var delivery *deliverypkg.Config
	opts := dsl.Options{}
	if *config != "" {
		var ds dsl.Diagnostics
		delivery, ds = deliverypkg.LoadConfig(*config, os.Getenv)
		for _, d := range ds {
			fmt.Fprintln(stderr, d)
		}
		if delivery == nil {
			return 1
		}
		opts.Endpoints = delivery.EndpointNames()
	}
	loadWith := func() (*dsl.RuleSet, dsl.Diagnostics) { return dsl.LoadWith(*rules, opts) }
	rs, ds := loadWith()
	for _, d := range ds {
		fmt.Fprintln(stderr, d)
	}
	if rs == nil {
		return 1
	}
	// The port first: a busy port fails before anything is created or
	// replayed.
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Error("cannot listen", "addr", *addr, "err", err)
		return 1
	}
	defer ln.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if u := os.Getenv("SWITCHBOARD_DATABASE_URL"); u != "" && !flagSet(fl, "data") {
		*data = u
	}
	st, where, err := openStore(ctx, *data, log)
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before serving")
			return 0
		}
		log.Error("cannot open the store", "data", where, "err", err)
		return 1
	}
	defer st.Close()
	*data = where
	logDelivery(log, delivery)
	svc, err := service.New(ctx, service.Config{Rules: rs, Load: loadWith, Store: st, Token: *token, Log: log, Seed: *seed,
		Retain: retention, SnapshotEvery: *snapEvery, SnapshotInterval: *snapInterval, Delivery: delivery,
		Unfinished: console.Unfinished(*rules, log)})
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before serving")
			return 0
		}
		log.Error("cannot start", "err", err)
		return 1
	}
	// SIGHUP, and with --watch a change to the files, reload the rules.
	reload := func(why string) {
		res, err := svc.Reload(ctx, service.ReloadNote{By: why})
		for _, d := range res.Diagnostics {
			log.Warn("rules", "diagnostic", d.String())
		}
		if err != nil {
			log.Error("reload", "why", why, "err", err)
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			reload("SIGHUP")
		}
	}()
	if *watch {
		go watchRules(ctx, *rules, func() { reload("files changed") })
	}

	// Timeouts: a slow or idle client cannot hold a connection for ever;
	// the read timeout leaves a 4 MiB batch time on a slow link.
	ui, err := console.New(console.Config{API: svc.Handler(), Token: *token, Log: log,
		Rules: *rules, Options: opts, Store: st, Journal: svc.Journal(), Publish: svc.Publish,
		WrongToken: func(remote string) { svc.WrongToken("console", remote) }})
	if err != nil {
		fmt.Fprintf(stderr, "switchboard serve: the console: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: withConsole(svc.Handler(), ui), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: *readTimeout,
		WriteTimeout: *readTimeout + 30*time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	srv.RegisterOnShutdown(svc.CloseStreams)
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { svc.Run(runCtx); close(runDone) }()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if n := len(*token); n > 0 && n < minToken {
		log.Warn(fmt.Sprintf("the token is %d characters long: whoever reaches %s could guess it; use %d or more random characters (openssl rand -hex 16)", n, ln.Addr(), minToken))
	}
	log.Info("serving", "addr", ln.Addr().String(), "rules", *rules, "version", svc.Version(), "data", *data, "auth", *token != "")

	code := 0
	select {
	case <-ctx.Done():
		log.Info("stopping: answering the requests in flight")
	case err := <-serveErr:
		log.Error("server failed", "err", err)
		code = 1
	}
	// Answer what is in flight (the commit loop still runs), then stop it.
	// A client still sending its body after the grace period is cut off:
	// it was never acknowledged, so nothing is lost.
	svc.Stopping()
	shutdown, cancel := context.WithTimeout(context.Background(), min(*grace, 8*time.Second))
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		log.Warn("closing the connections still open after the grace period", "grace_ms", grace.Milliseconds())
		srv.Close()
	}
	stopRun()
	<-runDone
	log.Info("stopped")
	return code
}

// isPostgres says whether --data names a PostgreSQL database.
func isPostgres(data string) bool {
	return strings.HasPrefix(data, "postgres://") || strings.HasPrefix(data, "postgresql://")
}

// openStore opens the SQLite file, or connects to PostgreSQL: until it
// answers, with a growing wait between tries and the reason logged each
// time (a database starting beside switchboard is waited for). It returns
// where the data is, without credentials.
func openStore(ctx context.Context, data string, log *slog.Logger) (store.Store, string, error) {
	if !isPostgres(data) {
		st, err := store.OpenSQLite(ctx, data)
		if err == nil && st.Created() {
			log.Info("created a new, empty database", "data", data)
		}
		return st, data, err
	}
	where := store.Where(data)
	wait := time.Second
	for {
		st, err := store.OpenPostgres(ctx, data)
		if err == nil {
			return st, where, nil
		}
		if store.Permanent(err) || ctx.Err() != nil {
			return nil, where, err // trying again would not help
		}
		log.Error("cannot reach the database; trying again", "data", where, "in", wait.String(), "err", err)
		select {
		case <-ctx.Done():
			return nil, where, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// withConsole serves the API under /v1 and the operational endpoints,
// and the web console everywhere else.
func withConsole(api, ui http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case strings.HasPrefix(p, "/v1/"), p == "/v1", p == "/healthz", p == "/readyz", p == "/metrics":
			api.ServeHTTP(w, r)
		default:
			ui.ServeHTTP(w, r)
		}
	})
}

// parseDays is time.ParseDuration with days ("90d"), up to a century.
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, err
		}
		if days > 36500 {
			return 0, fmt.Errorf("more than a century")
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
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
		if err != nil || e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue // hidden: a publish's note, an editor's swap file
		}
		fmt.Fprintf(&b, "%s %d %d\n", e.Name(), info.Size(), info.ModTime().UnixNano())
	}
	return b.String()
}

// logDelivery says where actions go; never a secret.
func logDelivery(log *slog.Logger, c *deliverypkg.Config) {
	if c == nil {
		log.Info("no --config: decisions are streamed (GET /v1/decisions/stream); emails and webhooks are recorded as dead until configured")
		return
	}
	platform, smtp := "none", "none"
	if c.Platform != nil {
		platform = c.Platform.URL
		if u, err := url.Parse(platform); err == nil {
			platform = u.Scheme + "://" + u.Host // a path or query may hold a token
		}
	}
	if c.SMTP != nil {
		smtp = net.JoinHostPort(c.SMTP.Host, strconv.Itoa(c.SMTP.Port))
	}
	log.Info("deliveries", "config", c.File, "platform", platform, "endpoints", c.EndpointNames(), "smtp", smtp, "max_age", c.MaxAge.String())
}
