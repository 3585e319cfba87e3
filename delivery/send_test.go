package delivery

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/store"
)

// A server that accepts and never greets holds an attempt no longer than
// its timeout, and a stop cuts it at once.
func TestMailServerSilent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	m := &SMTP{Host: "127.0.0.1", Port: port, Security: "none", From: "sb@example.com", Timeout: 300 * time.Millisecond}
	d := store.Delivery{ID: "sb-1-0", Body: []byte(`{"to":["a@example.com"],"subject":"s","text":"t"}`)}
	start := time.Now()
	r := sendMail(context.Background(), m, d)
	if took := time.Since(start); r.ok() || !r.retry || took > 2*time.Second {
		t.Fatalf("against a silent server: %+v after %v", r, took)
	}
	m.Timeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start = time.Now()
	sendMail(ctx, m, d)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("a stop took %v to cut the attempt", took)
	}
}
