package delivery

import (
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/internal/suggest"
)

// Config is where actions go: the service's configuration file.
//
//	source: https://switchboard.example.com   # CloudEvents source
//	console_url: https://switchboard.example.com
//	max_age: 24h                              # then an undelivered delivery is dead
//	platform:                                 # receives every decision
//	  url: https://platform.example.com/hooks/switchboard
//	  secret_env: PLATFORM_WEBHOOK_SECRET
//	endpoints:                                # notify webhook NAME
//	  crm: {url: https://crm.example.com/hooks, secret_file: /run/secrets/crm, timeout: 5s}
//	smtp:
//	  host: smtp.example.com
//	  port: 587
//	  security: starttls                      # starttls, tls or none
//	  username: switchboard
//	  password_env: SMTP_PASSWORD
//	  from: Switchboard <switchboard@example.com>
type Config struct {
	File       string
	Source     string // the CloudEvents source
	ConsoleURL string // links in emails, when set
	MaxAge     time.Duration
	Platform   *Endpoint            // nil: decisions are only streamed
	Endpoints  map[string]*Endpoint // by name
	SMTP       *SMTP                // nil: emails are dead with a reason
}

// Endpoint is a webhook receiver.
type Endpoint struct {
	Name    string
	URL     string
	Secrets []Secret // several while a secret is rotated; none: unsigned
	Timeout time.Duration
}

// SMTP is the mail server emails go through.
type SMTP struct {
	Host     string
	Port     int
	Security string // starttls, tls or none
	Username string
	Password string
	From     string
	Timeout  time.Duration
}

// Defaults.
const (
	DefaultMaxAge  = 24 * time.Hour
	DefaultTimeout = 10 * time.Second
	DefaultSource  = "switchboard"
)

// NewConfig is the configuration without any receiver: decisions are
// streamed, and emails and webhooks are dead with the reason.
func NewConfig() *Config {
	return &Config{Source: DefaultSource, MaxAge: DefaultMaxAge, Endpoints: map[string]*Endpoint{}}
}

// EndpointNames lists the named endpoints, sorted.
func (c *Config) EndpointNames() []string {
	var out []string
	for n := range c.Endpoints {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// LoadConfig reads a configuration file. Secrets are read from the
// environment (getenv) or from files named in it; with getenv nil they are
// not read at all (to check the file where the secrets are not). Every problem is
// reported with its line and column; with any error the configuration is
// nil.
func LoadConfig(path string, getenv func(string) string) (*Config, dsl.Diagnostics) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, dsl.Diagnostics{{Pos: dsl.Pos{File: path}, Severity: dsl.Error, Code: "config", Message: "cannot read the configuration: " + strings.TrimPrefix(err.Error(), "open "+path+": ")}}
	}
	return ParseConfig(path, data, getenv)
}

// ParseConfig reads a configuration from data.
func ParseConfig(file string, data []byte, getenv func(string) string) (*Config, dsl.Diagnostics) {
	p := &configParser{file: file, getenv: getenv}
	c := NewConfig()
	c.File = file
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		p.errorf(&yaml.Node{Line: 1, Column: 1}, "", "the configuration is not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		return nil, p.list
	}
	if len(doc.Content) == 0 {
		return c, nil
	}
	root := doc.Content[0]
	p.mapping(root, "the configuration", []string{"source", "console_url", "max_age", "timeout", "platform", "endpoints", "smtp"}, func(k, v *yaml.Node) {
		switch k.Value {
		case "source":
			c.Source = p.scalar(v, "source")
		case "console_url":
			c.ConsoleURL = p.url(v, "console_url")
		case "max_age":
			if c.MaxAge = p.duration(v, "max_age"); c.MaxAge > 0 && c.MaxAge < minMaxAge {
				p.errorf(v, "", "max_age: %v is too short to retry anything; write at least %v", c.MaxAge, minMaxAge)
			}
		case "timeout":
			p.timeout = p.timeoutOf(v, "timeout")
		}
	})
	// Endpoints take the default timeout, so read them after it.
	p.mapping(root, "", nil, func(k, v *yaml.Node) {
		switch k.Value {
		case "platform":
			c.Platform = p.endpoint(v, Platform)
		case "endpoints":
			if v.Kind != yaml.MappingNode {
				p.errorf(v, "write e.g. endpoints: {crm: {url: https://crm.example.com/hooks}}", "endpoints must be a mapping of names to endpoints")
				return
			}
			for i := 0; i+1 < len(v.Content); i += 2 {
				name := v.Content[i].Value
				if c.Endpoints[name] != nil {
					p.errorf(v.Content[i], "keep one", "endpoint %q is given twice", name)
					continue
				}
				if !validName(name) {
					p.errorf(v.Content[i], "", "endpoint name %q: use letters, digits, '_' and '-' only, as rules name it in notify webhook NAME", name)
					continue
				}
				c.Endpoints[name] = p.endpoint(v.Content[i+1], name)
			}
		case "smtp":
			c.SMTP = p.smtp(v)
		}
	})
	if c.Source == "" {
		c.Source = DefaultSource
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	p.list.Sort()
	if p.list.HasErrors() {
		return nil, p.list
	}
	return c, p.list
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

type configParser struct {
	file    string
	getenv  func(string) string
	timeout time.Duration
	list    dsl.Diagnostics
}

func (p *configParser) pos(n *yaml.Node) dsl.Pos {
	return dsl.Pos{File: p.file, Line: n.Line, Col: n.Column}
}

func (p *configParser) errorf(n *yaml.Node, hint, format string, args ...any) {
	p.list = append(p.list, dsl.Diagnostic{Pos: p.pos(n), Severity: dsl.Error, Code: "config", Message: fmt.Sprintf(format, args...), Hint: hint})
}

func (p *configParser) warnf(n *yaml.Node, hint, format string, args ...any) {
	p.list = append(p.list, dsl.Diagnostic{Pos: p.pos(n), Severity: dsl.Warning, Code: "config", Message: fmt.Sprintf(format, args...), Hint: hint})
}

// mapping calls fn for each key of a mapping. With keys, it also reports
// the keys it does not know, naming what (nil keys: no report).
func (p *configParser) mapping(n *yaml.Node, what string, keys []string, fn func(k, v *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		if keys != nil {
			p.errorf(n, "", "%s must be a mapping of keys to values", what)
		}
		return
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if prev, dup := seen[k.Value]; dup && keys != nil {
			p.errorf(k, "keep one", "%q is given twice in %s (first at line %d)", k.Value, what, prev.Line)
			continue
		}
		seen[k.Value] = k
		if keys != nil && !slices.Contains(keys, k.Value) {
			hint := ""
			if s := suggest.Closest(k.Value, keys); s != "" {
				hint = fmt.Sprintf("did you mean %q?", s)
			}
			if secretKey(k.Value) {
				hint = fmt.Sprintf("secrets are never written in the configuration: use %s_env: VARIABLE or %s_file: PATH", k.Value, k.Value)
			}
			p.errorf(k, hint, "unknown key %q in %s; expected %s", k.Value, what, strings.Join(keys, ", "))
			continue
		}
		fn(k, v)
	}
}

func secretKey(k string) bool { return k == "secret" || k == "password" || k == "secrets" }

func (p *configParser) scalar(n *yaml.Node, what string) string {
	if n.Kind != yaml.ScalarNode {
		p.errorf(n, "", "%s must be a single value", what)
		return ""
	}
	return strings.TrimSpace(n.Value)
}

// Bounds of the durations: a timeout (a claim outlives three attempts)
// and a maximum age.
const (
	maxTimeout = 5 * time.Minute
	minMaxAge  = time.Minute
)

func (p *configParser) timeoutOf(n *yaml.Node, what string) time.Duration {
	d := p.duration(n, what)
	if d > maxTimeout {
		p.errorf(n, "", "%s: %v is longer than %v; a receiver that slow is down", what, d, maxTimeout)
		return 0
	}
	return d
}

func (p *configParser) duration(n *yaml.Node, what string) time.Duration {
	s := p.scalar(n, what)
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if days, ok := strings.CutSuffix(s, "d"); ok && err != nil {
		if n, convErr := strconv.Atoi(days); convErr == nil && n > 0 && n <= 36500 {
			d, err = time.Duration(n)*24*time.Hour, nil
		}
	}
	if err != nil || d <= 0 {
		p.errorf(n, "write e.g. 10s, 5m, 24h or 2d", "%s: %q is not a positive duration", what, s)
		return 0
	}
	return d
}

func (p *configParser) url(n *yaml.Node, what string) string {
	s := p.scalar(n, what)
	u, err := url.Parse(s)
	if s == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		p.errorf(n, "write e.g. https://platform.example.com/hooks/switchboard", "%s: %q is not an http or https URL", what, s)
		return ""
	}
	if u.User != nil {
		p.errorf(n, "sign with secret_env or secret_file instead; the URL is logged", "%s: a URL must not hold a user name or password", what)
		return ""
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		p.warnf(n, "use https, so that what is sent is encrypted and the receiver is who it says", "%s: %q is plain http to another machine", what, s)
	}
	return s
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// secretValue reads a secret from NAME_env or NAME_file: the value of an
// environment variable, or a file's contents.
func (p *configParser) secretValue(k, v *yaml.Node) string {
	src := p.scalar(v, k.Value)
	if src == "" || p.getenv == nil {
		return "" // checking the configuration's shape only
	}
	if strings.HasSuffix(k.Value, "_env") {
		val := strings.TrimSpace(p.getenv(src))
		if val == "" {
			p.errorf(v, "set it in serve's environment, or use "+strings.TrimSuffix(k.Value, "_env")+"_file", "the environment variable %s is not set", src)
		}
		return val
	}
	data, err := os.ReadFile(src)
	if err != nil {
		p.errorf(v, "", "cannot read %s: %v", src, strings.TrimPrefix(err.Error(), "open "+src+": "))
		return ""
	}
	val := strings.TrimSpace(string(data))
	if val == "" {
		p.errorf(v, "", "%s is empty", src)
	}
	return val
}

func (p *configParser) endpoint(n *yaml.Node, name string) *Endpoint {
	e := &Endpoint{Name: name, Timeout: p.timeout}
	if e.Timeout == 0 {
		e.Timeout = DefaultTimeout
	}
	what := "endpoint " + name
	if name == Platform {
		what = "platform"
	}
	var urlNode *yaml.Node
	p.mapping(n, what, []string{"url", "secret_env", "secret_file", "timeout"}, func(k, v *yaml.Node) {
		switch k.Value {
		case "url":
			urlNode = v
			e.URL = p.url(v, what+" url")
		case "secret_env", "secret_file":
			// Several secrets, separated by spaces, while one is rotated.
			for f := range strings.FieldsSeq(p.secretValue(k, v)) {
				s, err := ParseSecret(f)
				if err != nil {
					p.errorf(v, "", "%s: %v", what, err)
					continue
				}
				e.Secrets = append(e.Secrets, s)
			}
		case "timeout":
			e.Timeout = p.timeoutOf(v, what+" timeout")
		}
	})
	if urlNode == nil && n.Kind == yaml.MappingNode {
		p.errorf(n, "add url: https://...", "%s has no url", what)
	}
	return e
}

func (p *configParser) smtp(n *yaml.Node) *SMTP {
	m := &SMTP{Security: "starttls", Timeout: p.timeout}
	if m.Timeout == 0 {
		m.Timeout = DefaultTimeout
	}
	var hostNode, fromNode *yaml.Node
	p.mapping(n, "smtp", []string{"host", "port", "security", "username", "password_env", "password_file", "from", "timeout"}, func(k, v *yaml.Node) {
		switch k.Value {
		case "host":
			hostNode = v
			m.Host = p.scalar(v, "smtp host")
		case "port":
			s := p.scalar(v, "smtp port")
			port, err := strconv.Atoi(s)
			if err != nil || port < 1 || port > 65535 {
				p.errorf(v, "587 for STARTTLS, 465 for TLS", "smtp port: %q is not a port number", s)
			}
			m.Port = port
		case "security":
			m.Security = p.scalar(v, "smtp security")
			if !slices.Contains([]string{"starttls", "tls", "none"}, m.Security) {
				p.errorf(v, "", "smtp security: %q is not one of starttls (port 587), tls (port 465) or none", m.Security)
			}
		case "username":
			m.Username = p.scalar(v, "smtp username")
		case "password_env", "password_file":
			m.Password = p.secretValue(k, v)
		case "from":
			fromNode = v
			m.From = p.scalar(v, "smtp from")
			if _, err := mail.ParseAddress(m.From); err != nil {
				p.errorf(v, "write e.g. Switchboard <switchboard@example.com>", "smtp from: %q is not an email address", m.From)
			}
		case "timeout":
			m.Timeout = p.timeoutOf(v, "smtp timeout")
		}
	})
	if n.Kind != yaml.MappingNode {
		return m
	}
	if hostNode == nil || m.Host == "" {
		p.errorf(n, "add host: smtp.example.com", "smtp has no host")
	}
	if fromNode == nil {
		p.errorf(n, "add from: Switchboard <switchboard@example.com>", "smtp has no from address")
	}
	if m.Port == 0 {
		m.Port = map[string]int{"starttls": 587, "tls": 465, "none": 25}[m.Security]
	}
	if m.Security == "none" && m.Password != "" && !loopback(m.Host) {
		p.errorf(n, "use security: starttls or tls", "smtp: a password would be sent unencrypted to %s", m.Host)
	}
	return m
}
