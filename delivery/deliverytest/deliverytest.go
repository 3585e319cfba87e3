// Package deliverytest holds real receivers for delivery tests: an HTTP
// server on loopback that checks Standard Webhooks signatures with the
// specification's own Go library (not Switchboard's code), and an SMTP
// server speaking the protocol over TCP (github.com/emersion/go-smtp).
// Both can be told to fail, to test retries.
package deliverytest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Hit is one request a Receiver got.
type Hit struct {
	ID        string // webhook-id
	Body      []byte
	Verified  bool   // the signature checked out with one of the receiver's secrets
	VerifyErr string // why not
	Status    int    // what the receiver answered
	At        time.Time
}

// Event decodes the hit's CloudEvent.
func (h Hit) Event() (map[string]any, error) {
	var m map[string]any
	err := json.Unmarshal(h.Body, &m)
	return m, err
}

// Reply is how a Receiver answers one request.
type Reply struct {
	Status     int           // 0: 204
	RetryAfter string        // a Retry-After header, if any
	Body       string        // the answer's body
	Delay      time.Duration // wait before answering (to make the sender time out)
}

// Receiver is a webhook receiver on loopback.
type Receiver struct {
	*httptest.Server
	verifiers []*standardwebhooks.Webhook

	mu    sync.Mutex
	hits  []Hit
	plan  []Reply                   // replies for the next requests, in order
	reply func(h Hit) (Reply, bool) // decides when set; false: use the plan
}

// NewReceiver starts a receiver that accepts signatures made with any of
// secrets (whsec_...).
func NewReceiver(secrets ...string) (*Receiver, error) {
	r := &Receiver{}
	for _, s := range secrets {
		v, err := standardwebhooks.NewWebhook(s)
		if err != nil {
			return nil, err
		}
		r.verifiers = append(r.verifiers, v)
	}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	return r, nil
}

// Then queues replies for the next requests; after them, requests get 204.
func (r *Receiver) Then(replies ...Reply) {
	r.mu.Lock()
	r.plan = append(r.plan, replies...)
	r.mu.Unlock()
}

// Decide makes fn choose the reply to each request (ok false: the plan).
func (r *Receiver) Decide(fn func(h Hit) (Reply, bool)) {
	r.mu.Lock()
	r.reply = fn
	r.mu.Unlock()
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	h := Hit{ID: req.Header.Get("webhook-id"), Body: body, At: time.Now()}
	if len(r.verifiers) == 0 {
		h.VerifyErr = "the receiver has no secret"
	}
	for _, v := range r.verifiers {
		err := v.Verify(body, req.Header)
		if err == nil {
			h.Verified, h.VerifyErr = true, ""
			break
		}
		h.VerifyErr = err.Error()
	}
	r.mu.Lock()
	rep, decided := Reply{}, false
	if r.reply != nil {
		rep, decided = r.reply(h)
	}
	if !decided && len(r.plan) > 0 {
		rep, r.plan = r.plan[0], r.plan[1:]
	}
	r.mu.Unlock()
	if rep.Delay > 0 {
		select {
		case <-time.After(rep.Delay):
		case <-req.Context().Done():
		}
	}
	if rep.Status == 0 {
		rep.Status = http.StatusNoContent
	}
	h.Status = rep.Status
	r.mu.Lock()
	r.hits = append(r.hits, h)
	r.mu.Unlock()
	if rep.RetryAfter != "" {
		w.Header().Set("Retry-After", rep.RetryAfter)
	}
	w.WriteHeader(rep.Status)
	io.WriteString(w, rep.Body)
}

// Hits returns the requests received so far.
func (r *Receiver) Hits() []Hit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Hit(nil), r.hits...)
}

// Accepted returns the requests answered 2xx, in the order they came.
func (r *Receiver) Accepted() []Hit {
	var out []Hit
	for _, h := range r.Hits() {
		if h.Status >= 200 && h.Status < 300 {
			out = append(out, h)
		}
	}
	return out
}

// Message is one email a MailServer took.
type Message struct {
	From string
	To   []string
	Data []byte
	// Header and Body are Data read as a message.
	Header mail.Header
	Body   string
}

// MailServer is an SMTP server on loopback, without TLS or
// authentication.
type MailServer struct {
	Addr string
	srv  *smtp.Server

	mu       sync.Mutex
	messages []Message
	fail     []error // errors for the next DATA commands
}

// NewMailServer starts an SMTP server on a free loopback port.
func NewMailServer() (*MailServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &MailServer{Addr: ln.Addr().String()}
	m.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{m: m}, nil }))
	m.srv.Domain = "localhost"
	m.srv.AllowInsecureAuth = true
	m.srv.ReadTimeout, m.srv.WriteTimeout = 10*time.Second, 10*time.Second
	m.srv.ErrorLog = discardLogger{}
	go m.srv.Serve(ln)
	return m, nil
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}

// Port is the server's port.
func (m *MailServer) Port() int {
	_, p, _ := net.SplitHostPort(m.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// FailNext makes the next messages be refused: 451 (temporary) when temp,
// 550 (final) otherwise.
func (m *MailServer) FailNext(temp bool, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for range n {
		if temp {
			m.fail = append(m.fail, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"})
		} else {
			m.fail = append(m.fail, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"})
		}
	}
}

// To returns the messages taken for an address.
func (m *MailServer) To(addr string) []Message {
	var out []Message
	for _, msg := range m.Messages() {
		for _, to := range msg.To {
			if to == addr {
				out = append(out, msg)
			}
		}
	}
	return out
}

// Messages returns the messages taken so far.
func (m *MailServer) Messages() []Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Message(nil), m.messages...)
}

// Close stops the server.
func (m *MailServer) Close() error { return m.srv.Close() }

type session struct {
	m    *MailServer
	from string
	to   []string
}

func (s *session) AuthPlain(string, string) error { return nil }
func (s *session) Reset()                         { s.from, s.to = "", nil }
func (s *session) Logout() error                  { return nil }
func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if len(s.m.fail) > 0 {
		err := s.m.fail[0]
		s.m.fail = s.m.fail[1:]
		return err
	}
	msg := Message{From: s.from, To: s.to, Data: data}
	if parsed, err := mail.ReadMessage(bytes.NewReader(data)); err == nil {
		msg.Header = parsed.Header
		var body io.Reader = parsed.Body
		if strings.EqualFold(parsed.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(body)
		}
		b, _ := io.ReadAll(body)
		msg.Body = strings.ReplaceAll(string(b), "\r\n", "\n")
	} else {
		return errors.New("the message cannot be read: " + err.Error())
	}
	s.m.messages = append(s.m.messages, msg)
	return nil
}

// String describes the server.
func (m *MailServer) String() string { return fmt.Sprintf("smtp://%s", m.Addr) }
