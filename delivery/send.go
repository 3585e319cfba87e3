package delivery

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/switchboard-dev/switchboard/store"
)

// result is how one attempt went.
type result struct {
	code   int    // the receiver's status; 0 without an answer
	err    string // what went wrong; "" on success
	answer string // the start of the receiver's answer
	// retry: the failure may pass (a timeout, 408, 429, 5xx, a temporary
	// SMTP error); otherwise it is final.
	retry bool
	// after is how long the receiver asked to be left alone (Retry-After).
	after time.Duration
}

func (r result) ok() bool { return r.err == "" }

// answerLimit is how much of a receiver's answer is kept.
const answerLimit = 4096

// post sends a webhook delivery to an endpoint, signed.
func post(ctx context.Context, client *http.Client, ep *Endpoint, id string, body []byte, now time.Time, userAgent string) result {
	ctx, cancel := context.WithTimeout(ctx, ep.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return result{err: err.Error()}
	}
	req.Header.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	if len(ep.Secrets) > 0 {
		req.Header.Set("webhook-signature", Signature(ep.Secrets, id, now, body))
	}
	resp, err := client.Do(req)
	if err != nil {
		msg := err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			msg = fmt.Sprintf("no answer within %v", ep.Timeout)
		}
		var uerr interface{ Unwrap() error }
		if errors.As(err, &uerr) && uerr.Unwrap() != nil && !errors.Is(err, context.DeadlineExceeded) {
			msg = uerr.Unwrap().Error()
		}
		return result{err: msg, retry: true}
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, answerLimit))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	r := result{code: resp.StatusCode, answer: string(answer)}
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return r
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		r.err, r.retry = fmt.Sprintf("the receiver answered %d %s", c, http.StatusText(c)), true
		r.after = retryAfter(resp.Header.Get("Retry-After"), now)
	case c >= 300 && c < 400:
		r.err = fmt.Sprintf("the receiver answered %d %s; redirects are not followed: configure the final URL", c, http.StatusText(c))
	default:
		r.err = fmt.Sprintf("the receiver refused it: %d %s", c, http.StatusText(c))
	}
	return r
}

// maxRetryAfter bounds a Retry-After, in seconds: a week, longer than any
// maximum age.
const maxRetryAfter = 7 * 24 * 3600

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if s, err := strconv.ParseInt(h, 10, 64); err == nil && s >= 0 {
		// Bounded before it becomes a duration, which would overflow.
		return time.Duration(min(s, maxRetryAfter)) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// sendMail sends an email delivery through the SMTP server.
func sendMail(ctx context.Context, m *SMTP, d store.Delivery) result {
	var mail Mail
	if err := json.Unmarshal(d.Body, &mail); err != nil {
		return result{err: "the stored email cannot be read: " + err.Error()}
	}
	msg := gomail.NewMsg()
	if err := msg.From(m.From); err != nil {
		return result{err: "smtp from: " + err.Error()}
	}
	if err := msg.To(mail.To...); err != nil {
		return result{err: "recipient: " + err.Error()}
	}
	msg.Subject(mail.Subject)
	msg.SetBodyString(gomail.TypeTextPlain, mail.Text)
	// The same Message-ID on every attempt, so that a mail client can
	// drop a duplicate.
	msg.SetMessageIDWithValue(d.ID + "@switchboard")
	msg.SetGenHeader("X-Switchboard-Delivery", d.ID)
	// The whole exchange is bounded, not only the dial: a server that
	// accepts and never greets must not hold a worker (nor a shutdown).
	// (The context go-mail dials with ends with the dial; the attempt's
	// is watched instead.)
	ctx, cancel := context.WithTimeout(ctx, m.Timeout)
	defer cancel()
	deadline := time.Now().Add(m.Timeout)
	dial := func(dialCtx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{Timeout: m.Timeout}).DialContext(dialCtx, network, addr)
		if err != nil {
			return nil, err
		}
		conn.SetDeadline(deadline)
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		if m.Security == "tls" {
			// Implicit TLS (port 465): the handshake is ours, as the dial
			// is; certificates are verified.
			tc := tls.Client(conn, &tls.Config{ServerName: m.Host, MinVersion: tls.VersionTLS12})
			if err := tc.HandshakeContext(dialCtx); err != nil {
				stop()
				conn.Close()
				return nil, err
			}
			return &stopConn{Conn: tc, stop: stop}, nil
		}
		return &stopConn{Conn: conn, stop: stop}, nil
	}
	opts := []gomail.Option{gomail.WithPort(m.Port), gomail.WithTimeout(m.Timeout), gomail.WithDialContextFunc(dial)}
	switch m.Security {
	case "tls":
		opts = append(opts, gomail.WithSSL())
	case "none":
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	default:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	}
	if m.Username != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover), gomail.WithUsername(m.Username), gomail.WithPassword(m.Password))
	}
	client, err := gomail.NewClient(m.Host, opts...)
	if err != nil {
		return result{err: "smtp: " + err.Error()}
	}
	if err := client.DialAndSendWithContext(ctx, msg); err != nil {
		r := result{err: "smtp: " + err.Error(), retry: true}
		var serr *gomail.SendError
		if errors.As(err, &serr) {
			r.code = serr.ErrorCode()
			// 5xx from the server is final (an unknown mailbox, say); a
			// 4xx or no code at all (the connection) may pass.
			r.retry = serr.IsTemp() || r.code < 500
		}
		return r
	}
	return result{code: 250}
}

// stopConn stops watching the context when the connection is closed.
type stopConn struct {
	net.Conn
	stop func() bool
}

func (c *stopConn) Close() error {
	c.stop()
	return c.Conn.Close()
}
