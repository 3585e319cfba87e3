package console

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config says what the console shows and how people reach it.
type Config struct {
	// API is the service's JSON API (/v1/...), called in process.
	API http.Handler
	// Token is the service's token: people log in with it. Empty: the
	// console answers only on loopback, without logging in.
	Token string
	// Log is where the console says what went wrong.
	Log *slog.Logger

	// Rules is the rule set's directory, which serve loads: the rules page
	// shows its files, the table editor writes its mapping table. Options
	// are what serve checks it with.
	Rules   string
	Options dsl.Options
	// Store and Journal are the service's log: Preview replays it.
	Store   store.Store
	Journal *journal.Journal
	// Publish writes the rule set's files and reloads, with no other
	// reload in between (service.Publish). Nil: the table is read-only.
	Publish func(ctx context.Context, note service.ReloadNote, write func() (undo func() error, err error), verify func(*dsl.RuleSet) error) (service.ReloadResult, error)
	// Now is the clock; nil: the wall clock.
	Now func() time.Time
	// WrongToken, when set, is told of each login refused for a wrong
	// token, with the remote address (service.WrongToken).
	WrongToken func(remote string)
}

// Console is the web console's handler.
type Console struct {
	cfg   Config
	pages map[string]*template.Template
	mux   *http.ServeMux
	// key signs sessions and CSRF tokens; a new one at each start, so a
	// restart logs everyone out.
	key []byte

	mu       sync.Mutex
	sessions map[string]*session // by id

	// publishing makes previews one at a time: a replay of a week is
	// heavy, and the desk must keep routing beside it.
	previews chan struct{}
	checks   chan struct{} // table checks running
}

// session is a login.
type session struct {
	expires time.Time
	name    string // who logged in, as they said: for the rules history
}

// sessionTTL is how long a login lasts without use.
const sessionTTL = 12 * time.Hour

// cookieName is the session cookie.
const cookieName = "switchboard_session"

// New returns the console.
func New(cfg Config) (*Console, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Console{cfg: cfg, pages: map[string]*template.Template{}, sessions: map[string]*session{}, key: make([]byte, 32), previews: make(chan struct{}, 1), checks: make(chan struct{}, 2)}
	rand.Read(c.key)
	funcs := template.FuncMap{
		"json":   func(v any) string { b, _ := json.Marshal(v); return string(b) },
		"since":  since,
		"units":  units,
		"pct":    pct,
		"action": describeAction,
		"dict": func(kv ...any) map[string]any {
			m := map[string]any{}
			for i := 0; i+1 < len(kv); i += 2 {
				m[kv[i].(string)] = kv[i+1]
			}
			return m
		},
	}
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/parts.html")
	if err != nil {
		return nil, err
	}
	for _, page := range []string{"login", "live", "event", "conversation", "table", "rules", "diff", "deliveries"} {
		t, err := template.Must(base.Clone()).ParseFS(templateFS, "templates/"+page+".html")
		if err != nil {
			return nil, err
		}
		c.pages[page] = t
	}
	static, _ := fs.Sub(staticFS, "static")
	m := http.NewServeMux()
	m.Handle("GET /static/", http.StripPrefix("/static/", cacheFor(http.FileServerFS(static))))
	m.HandleFunc("GET /login", c.loginPage)
	m.HandleFunc("POST /login", c.login)
	m.Handle("POST /logout", c.authed(c.logout))
	m.Handle("GET /{$}", c.authed(c.live))
	m.Handle("GET /live/agents", c.authed(c.livePart(partAgents, "agents")))
	m.Handle("GET /live/queues", c.authed(c.livePart(partQueues, "queues")))
	m.Handle("GET /live/decisions", c.authed(c.livePart(partDecisions, "decisions")))
	m.Handle("GET /events/{id}", c.authed(c.event))
	m.Handle("GET /conversations/{id}", c.authed(c.conversation))
	m.Handle("GET /table", c.authed(c.table))
	m.Handle("POST /table", c.authed(c.tableEdit))
	m.Handle("POST /table/check", c.authed(c.tableCheck))
	m.Handle("GET /rules", c.authed(c.rules))
	m.Handle("GET /rules/diff", c.authed(c.rulesDiff))
	m.Handle("GET /deliveries", c.authed(c.deliveries))
	m.Handle("POST /deliveries/{id}/retry", c.authed(c.retry))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusNotFound, "There is no page at "+r.URL.Path+".")
	})
	c.mux = m
	return c, nil
}

func cacheFor(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.ServeHTTP(w, r)
	})
}

// ServeHTTP serves the console: on loopback only when there is no token.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'")
	// Without a token, only this machine, under a name for this machine:
	// a page elsewhere that rebinds its own name to 127.0.0.1 gets nothing.
	if c.cfg.Token == "" && (!service.FromLoopback(r) || !service.LocalHost(r.Host)) {
		http.Error(w, "The console answers only on this machine (as localhost or 127.0.0.1) when the service runs without --token. Start serve with --token to reach it from elsewhere.", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if !c.readForm(w, r) {
			return
		}
	}
	c.mux.ServeHTTP(w, r)
}

// Limits of what a page posts: a login is a few fields; the table editor
// posts the whole table.
const (
	maxLoginBody = 8 << 10
	maxFormBody  = 16 << 20
)

// readForm reads a page's form, and only a page's form: URL-encoded and
// bounded, never multipart (nothing here uploads files, and a multipart
// body is spooled to disk before anyone has logged in).
func (c *Console) readForm(w http.ResponseWriter, r *http.Request) bool {
	limit := int64(maxFormBody)
	if r.URL.Path == "/login" {
		limit = maxLoginBody
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		c.fail(w, r, http.StatusUnsupportedMediaType, "The console takes forms as its pages post them (application/x-www-form-urlencoded), not "+ct+".")
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		msg := "The form could not be read: " + err.Error() + ". Reload the page and try again."
		code := http.StatusBadRequest
		switch {
		case errors.As(err, &tooBig):
			msg, code = fmt.Sprintf("The form is over %d bytes, more than any console page posts. A table that large is edited in the file itself.", limit), http.StatusRequestEntityTooLarge
		case strings.Contains(err.Error(), "too many"):
			msg, code = "The form has more fields than the console reads. A table that large is edited in the file itself.", http.StatusRequestEntityTooLarge
		}
		c.fail(w, r, code, msg)
		return false
	}
	return true
}

// session is the request's login, if any: its id and who it is.
func (c *Console) session(r *http.Request) (id, name string, ok bool) {
	if c.cfg.Token == "" {
		return "local", "", true
	}
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return "", "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.sessions[ck.Value]
	if !ok || time.Now().After(s.expires) {
		delete(c.sessions, ck.Value)
		return "", "", false
	}
	s.expires = time.Now().Add(sessionTTL)
	return ck.Value, s.name, true
}

// remember keeps the name a session's person gave last.
func (c *Console) remember(id, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.sessions[id]; ok {
		s.name = name
	}
}

// csrf is the token a session's writes carry.
func (c *Console) csrf(session string) string {
	m := hmac.New(sha256.New, c.key)
	io.WriteString(m, "csrf:"+session)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF says whether a write carries its session's token (a form
// field, or the X-CSRF-Token header htmx sends).
func (c *Console) checkCSRF(r *http.Request, session string) bool {
	got := r.Header.Get("X-CSRF-Token")
	if got == "" {
		got = r.PostFormValue("csrf")
	}
	return hmac.Equal([]byte(got), []byte(c.csrf(session)))
}

// authed lets logged-in requests through (and checks the CSRF token of
// writes); others go to the login page.
func (c *Console) authed(h func(w http.ResponseWriter, r *http.Request, v *view)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, name, ok := c.session(r)
		if !ok {
			if r.Header.Get("HX-Request") != "" {
				w.Header().Set("HX-Redirect", "/login")
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/login?next="+urlQuery(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !c.checkCSRF(r, s) {
			c.fail(w, r, http.StatusForbidden, "This change was refused: it did not come from a console page (the CSRF token is missing or wrong). Reload the page and try again.")
			return
		}
		h(w, r, &view{CSRF: c.csrf(s), LoggedIn: c.cfg.Token != "", Path: r.URL.Path, session: s, User: name})
	})
}

func urlQuery(s string) string {
	return strings.NewReplacer("%", "%25", "&", "%26", "#", "%23", "?", "%3F", "+", "%2B", " ", "%20").Replace(s)
}

// view is what every page template gets.
type view struct {
	Title    string
	CSRF     string
	LoggedIn bool
	Path     string
	Error    string
	Data     any
	// User is the name the person logged in with, if they gave one.
	User    string
	session string
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Token == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	c.render(w, r, http.StatusOK, "login", &view{Title: "Log in", Data: safeNext(r.URL.Query().Get("next"))})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Token == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	next := safeNext(r.PostFormValue("next"))
	if subtle.ConstantTimeCompare([]byte(r.PostFormValue("token")), []byte(c.cfg.Token)) != 1 {
		if c.cfg.WrongToken != nil {
			c.cfg.WrongToken(r.RemoteAddr)
		}
		c.render(w, r, http.StatusUnauthorized, "login", &view{Title: "Log in", Error: "That is not the service's token. It is the value serve was started with (--token, or SWITCHBOARD_TOKEN).", Data: next})
		return
	}
	id := make([]byte, 32)
	rand.Read(id)
	s := base64.RawURLEncoding.EncodeToString(id)
	c.mu.Lock()
	now := time.Now()
	for k, old := range c.sessions {
		if now.After(old.expires) {
			delete(c.sessions, k)
		}
	}
	c.sessions[s] = &session{expires: now.Add(sessionTTL), name: cleanName(r.PostFormValue("name"))}
	c.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// cleanName is a person's name as the history keeps it: one line, not
// too long.
func cleanName(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 80 {
		s = string(r[:80])
	}
	return s
}

// safeNext keeps a redirect after login on this site: a path, with no
// way for a browser to read it as another host (//host, /\host, or those
// with tabs or other control characters in between, which browsers drop).
func safeNext(next string) string {
	for _, r := range next {
		if r < 0x20 || r == 0x7f || r == '\\' || unicode.IsSpace(r) {
			return "/"
		}
	}
	u, err := url.Parse(next)
	if err != nil || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || u.Scheme != "" || u.Host != "" {
		return "/"
	}
	return next
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, _ *view) {
	if ck, err := r.Cookie(cookieName); err == nil {
		c.mu.Lock()
		delete(c.sessions, ck.Value)
		c.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// render writes a page, or, for htmx, the part it asked for.
func (c *Console) render(w http.ResponseWriter, r *http.Request, code int, page string, v *view) {
	c.renderTemplate(w, code, c.pages[page], "layout.html", v)
}

// renderPart writes one named part of a page.
func (c *Console) renderPart(w http.ResponseWriter, page, part string, v *view) {
	c.renderTemplate(w, http.StatusOK, c.pages[page], part, v)
}

func (c *Console) renderTemplate(w http.ResponseWriter, code int, t *template.Template, name string, v any) {
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, name, v); err != nil {
		c.cfg.Log.Error("console: cannot render a page", "template", name, "err", err)
		http.Error(w, "The console could not draw this page; the service's log says why.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

// fail shows a page that says what went wrong, in words.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if r.Header.Get("HX-Request") != "" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(code)
		fmt.Fprintf(w, `<p class="error" role="alert">%s</p>`, template.HTMLEscapeString(msg))
		return
	}
	c.render(w, r, code, "login", &view{Title: "Something went wrong", Error: msg, Data: "/"})
}

// api calls the service's JSON API in process, as the service's token
// holder, and decodes the answer into out.
func (c *Console) api(ctx context.Context, method, path string, body []byte, out any) (int, error) {
	// A call within the process: from this machine, to it by its name
	// (httptest's default Host, example.com, is what a page that rebinds
	// a name to 127.0.0.1 would send, and an API without a token refuses
	// it).
	req := httptest.NewRequestWithContext(ctx, method, path, bytes.NewReader(body))
	req.RemoteAddr, req.Host = "127.0.0.1:0", "localhost"
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	rec := httptest.NewRecorder()
	c.cfg.API.ServeHTTP(rec, req)
	if rec.Code >= 400 {
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(rec.Body.Bytes(), &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(rec.Body.String())
		}
		return rec.Code, fmt.Errorf("%s", e.Error)
	}
	if out == nil {
		return rec.Code, nil
	}
	switch o := out.(type) {
	case *string:
		*o = rec.Body.String()
		return rec.Code, nil
	}
	return rec.Code, json.Unmarshal(rec.Body.Bytes(), out)
}
