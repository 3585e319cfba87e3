package console

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// retried are the deliveries the fake API was asked to retry.
var retried []string

// fakeAPI answers as the service's API does, for one agent and one
// decision; it checks the token the console presents.
func fakeAPI(t *testing.T, token string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"missing or wrong token"}`)
			return
		}
		switch r.URL.Path {
		case "/v1/agents":
			fmt.Fprint(w, `[{"id":"lucia","name":"Lucía","status":"online","load":1,"capacity":3,"open":1,"conversations":["e1"]}]`)
		case "/v1/queues":
			fmt.Fprint(w, `[{"group":"Spanish","waiting":[{"conversation":"e2","priority":0,"since":"2026-01-01T00:00:00Z","wait_seconds":42,"rule":"r"}]}]`)
		case "/v1/decisions":
			fmt.Fprint(w, `{"decisions":[{"seq":1,"event":"e1","type":"message.received","at":"2026-01-01T00:00:00Z","decision":{"event":"e1","conversation":"e1","actions":[{"type":"assign","rule":"r","conversation":"e1","agent":"lucia","group":"Spanish"}]}}],"next":1}`)
		case "/v1/events/e1/explain":
			fmt.Fprint(w, "event e1: message.received\n  <script>alert(1)</script>\n")
		case "/v1/events/e1":
			fmt.Fprint(w, `{"decision":{"event":"e1"}}`)
		case "/v1/deliveries":
			if r.URL.Query().Get("status") == "dead" {
				fmt.Fprint(w, `{"deliveries":[{"id":"sb-1-1","destination":"webhook:crm","kind":"notify","status":"dead","attempts":3,"code":400,"answer":"no such account"}]}`)
				return
			}
			fmt.Fprint(w, `{"deliveries":[]}`)
		case "/v1/deliveries/sb-1-1/retry":
			if r.Method != "POST" {
				w.WriteHeader(http.StatusMethodNotAllowed)
				return
			}
			retried = append(retried, "sb-1-1")
			fmt.Fprint(w, `{"id":"sb-1-1","status":"pending"}`)
		case "/v1/deliveries/sb-2-1/retry":
			w.WriteHeader(http.StatusConflict)
			fmt.Fprint(w, `{"error":"delivery sb-2-1 was delivered already"}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"no event \"nope\""}`)
		}
	})
}

func newConsole(t *testing.T, token string) *Console {
	c, err := New(Config{API: fakeAPI(t, token), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func do(c http.Handler, method, path, remote string, form url.Values, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	r := httptest.NewRequest(method, path, body)
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	r.RemoteAddr, r.Host = remote, "localhost:8080"
	for _, ck := range cookies {
		r.AddCookie(ck)
	}
	w := httptest.NewRecorder()
	c.ServeHTTP(w, r)
	return w
}

// TestLoopbackOnly: without a token the console is the desk at once on
// this machine, and refused from elsewhere.
func TestLoopbackOnly(t *testing.T) {
	c := newConsole(t, "")
	if w := do(c, "GET", "/", "127.0.0.1:5000", nil); w.Code != 200 || !strings.Contains(w.Body.String(), "Lucía") || !strings.Contains(w.Body.String(), `href="/events/e1"`) {
		t.Fatalf("the desk on loopback: %d\n%s", w.Code, w.Body.String())
	}
	if w := do(c, "GET", "/", "[::1]:5000", nil); w.Code != 200 {
		t.Fatalf("the desk on ::1: %d", w.Code)
	}
	if w := do(c, "GET", "/", "10.0.0.7:5000", nil); w.Code != 403 || !strings.Contains(w.Body.String(), "--token") {
		t.Fatalf("from elsewhere: %d %s", w.Code, w.Body.String())
	}
	// A page elsewhere whose name now points at 127.0.0.1 (DNS
	// rebinding) reaches loopback under its own name: refused.
	r := httptest.NewRequest("GET", "http://evil.example:8080/", nil)
	r.RemoteAddr = "127.0.0.1:5000"
	w := httptest.NewRecorder()
	c.ServeHTTP(w, r)
	if w.Code != 403 {
		t.Fatalf("a rebound name: %d", w.Code)
	}
	for _, host := range []string{"localhost:8080", "127.0.0.1:8080", "[::1]:8080", "LOCALHOST"} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host, r.RemoteAddr = host, "127.0.0.1:5000"
		w := httptest.NewRecorder()
		c.ServeHTTP(w, r)
		if w.Code != 200 {
			t.Errorf("Host %s: %d", host, w.Code)
		}
	}
}

// TestLogin: with a token, pages need a login; a wrong token is said so;
// the session cookie is HttpOnly and SameSite=Strict; writes need the
// page's CSRF token; logging out ends the session.
func TestLogin(t *testing.T) {
	c := newConsole(t, "s3cret")
	remote := "10.0.0.7:5000"
	if w := do(c, "GET", "/events/e1", remote, nil); w.Code != 303 || w.Header().Get("Location") != "/login?next=/events/e1" {
		t.Fatalf("not logged in: %d %v", w.Code, w.Header())
	}
	if w := do(c, "POST", "/login", remote, url.Values{"token": {"wrong"}}); w.Code != 401 || !strings.Contains(w.Body.String(), "not the service&#39;s token") {
		t.Fatalf("a wrong token: %d %s", w.Code, w.Body.String())
	}
	w := do(c, "POST", "/login", remote, url.Values{"token": {"s3cret"}, "next": {"/events/e1"}})
	if w.Code != 303 || w.Header().Get("Location") != "/events/e1" {
		t.Fatalf("login: %d %v", w.Code, w.Header())
	}
	ck := w.Result().Cookies()[0]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Value == "" {
		t.Fatalf("the session cookie: %+v", ck)
	}
	page := do(c, "GET", "/events/e1", remote, nil, ck)
	if page.Code != 200 || !strings.Contains(page.Body.String(), "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Fatalf("the explanation, escaped: %d\n%s", page.Code, page.Body.String())
	}
	// A write without the page's CSRF token is refused, and changes
	// nothing: the session lives on.
	if w := do(c, "POST", "/logout", remote, url.Values{}, ck); w.Code != 403 || !strings.Contains(w.Body.String(), "CSRF") {
		t.Fatalf("logout without the CSRF token: %d %s", w.Code, w.Body.String())
	}
	if w := do(c, "GET", "/", remote, nil, ck); w.Code != 200 {
		t.Fatalf("the session after a refused write: %d", w.Code)
	}
	csrf := c.csrf(ck.Value)
	if w := do(c, "POST", "/logout", remote, url.Values{"csrf": {csrf}}, ck); w.Code != 303 {
		t.Fatalf("logout: %d %s", w.Code, w.Body.String())
	}
	if w := do(c, "GET", "/", remote, nil, ck); w.Code != 303 {
		t.Fatalf("after logout: %d", w.Code)
	}
	// htmx polls after the session ended are told to log in again.
	r := httptest.NewRequest("GET", "/live/agents", nil)
	r.Header.Set("HX-Request", "true")
	r.AddCookie(ck)
	hw := httptest.NewRecorder()
	c.ServeHTTP(hw, r)
	if hw.Code != 401 || hw.Header().Get("HX-Redirect") != "/login" {
		t.Fatalf("an htmx poll, logged out: %d %v", hw.Code, hw.Header())
	}
}

// TestNoOpenRedirect: after login, only this site's paths are followed.
func TestNoOpenRedirect(t *testing.T) {
	for next, want := range map[string]string{"/x": "/x", "/table?published=1": "/table?published=1", "//evil.example": "/", "https://evil.example": "/",
		"/\\evil": "/", "": "/", "/\t/evil.example": "/", "/\n/evil": "/", " //evil": "/", "/ /evil": "/", "/\x7f/evil": "/"} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
}

// TestForms: the console reads forms as its pages post them, bounded; a
// multipart body, or a body too large, is refused before it is read.
func TestForms(t *testing.T) {
	c := newConsole(t, "s3cret")
	r := httptest.NewRequest("POST", "/login", strings.NewReader("--x\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\ns3cret\r\n--x--\r\n"))
	r.Header.Set("Content-Type", "multipart/form-data; boundary=x")
	r.RemoteAddr = "10.0.0.7:1"
	w := httptest.NewRecorder()
	c.ServeHTTP(w, r)
	if w.Code != http.StatusUnsupportedMediaType || len(w.Result().Cookies()) != 0 {
		t.Fatalf("a multipart login: %d %v", w.Code, w.Result().Cookies())
	}
	big := url.Values{"token": {strings.Repeat("x", maxLoginBody)}}
	if w := do(c, "POST", "/login", "10.0.0.7:1", big); w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("a large login: %d", w.Code)
	}
}

// TestParts: the live page's parts come alone for htmx, and an unknown
// event says so in words.
func TestParts(t *testing.T) {
	c := newConsole(t, "")
	w := do(c, "GET", "/live/queues", "127.0.0.1:1", nil)
	if w.Code != 200 || strings.Contains(w.Body.String(), "<html") || !strings.Contains(w.Body.String(), "Group Spanish") || !strings.Contains(w.Body.String(), "42 s") {
		t.Fatalf("the waiting part: %d\n%s", w.Code, w.Body.String())
	}
	if w := do(c, "GET", "/events/nope", "127.0.0.1:1", nil); w.Code != 404 || !strings.Contains(w.Body.String(), "No event &#34;nope&#34; is stored") {
		t.Fatalf("an unknown event: %d\n%s", w.Code, w.Body.String())
	}
	if w := do(c, "GET", "/static/htmx.min.js", "127.0.0.1:1", nil); w.Code != 200 || w.Body.Len() < 10000 {
		t.Fatalf("htmx: %d, %d bytes", w.Code, w.Body.Len())
	}
}

// TestDeliveries: failed and dead deliveries are listed with their
// answers; a retry goes to the API with the page's CSRF token only, and
// one the API refuses says why.
func TestDeliveries(t *testing.T) {
	c := newConsole(t, "tok")
	remote := "10.0.0.7:5000"
	w := do(c, "POST", "/login", remote, url.Values{"token": {"tok"}})
	ck := w.Result().Cookies()[0]
	page := do(c, "GET", "/deliveries", remote, nil, ck)
	if page.Code != 200 || !strings.Contains(page.Body.String(), "sb-1-1") || !strings.Contains(page.Body.String(), "no such account") || !strings.Contains(page.Body.String(), `aria-label="Retry delivery sb-1-1"`) {
		t.Fatalf("the deliveries page: %d\n%s", page.Code, page.Body.String())
	}
	retried = nil
	if w := do(c, "POST", "/deliveries/sb-1-1/retry", remote, url.Values{}, ck); w.Code != 403 || len(retried) != 0 {
		t.Fatalf("a retry without the CSRF token: %d, retried %v", w.Code, retried)
	}
	if w := do(c, "POST", "/deliveries/sb-1-1/retry", remote, url.Values{"csrf": {c.csrf(ck.Value)}}, ck); w.Code != 303 || len(retried) != 1 || w.Header().Get("Location") != "/deliveries?retried=sb-1-1" {
		t.Fatalf("a retry: %d %v, retried %v", w.Code, w.Header(), retried)
	}
	if w := do(c, "POST", "/deliveries/sb-2-1/retry", remote, url.Values{"csrf": {c.csrf(ck.Value)}}, ck); w.Code != 409 || !strings.Contains(w.Body.String(), "was delivered already") {
		t.Fatalf("a refused retry: %d %s", w.Code, w.Body.String())
	}
}
