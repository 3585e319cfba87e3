package delivery

import (
	"strings"
	"testing"
)

// Every mistake in a configuration is said, by line and column.
func TestConfigMistakes(t *testing.T) {
	env := map[string]string{"S": "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
	cfg, ds := ParseConfig("c.yaml", []byte(`max_age: 1ns
platform: {url: "", secret: whsec_x}
endpoints:
  crm: {url: "https://user:pw@crm.example.com/h", timeout: 1000000h}
  crm: {url: https://crm.example.com/h}
  bad name: {url: https://x.example.com}
  erp: {url: http://erp.example.com/h, secret_env: NOPE}
smtp: {host: "", port: 99999, security: ssl, from: not an address}
sorce: x
`), func(k string) string { return env[k] })
	if cfg != nil {
		t.Fatal("a configuration with errors was returned")
	}
	got := ds.Error()
	for _, want := range []string{
		`c.yaml:1:10: max_age: 1ns is too short to retry anything; write at least 1m0s`,
		`c.yaml:2:17: platform url: "" is not an http or https URL`,
		`c.yaml:2:21: unknown key "secret" in platform; expected url, secret_env, secret_file, timeout; secrets are never written in the configuration: use secret_env: VARIABLE or secret_file: PATH`,
		`c.yaml:4:14: endpoint crm url: a URL must not hold a user name or password`,
		`c.yaml:4:60: endpoint crm timeout: 1000000h0m0s is longer than 5m0s; a receiver that slow is down`,
		`c.yaml:5:3: endpoint "crm" is given twice`,
		`c.yaml:6:3: endpoint name "bad name": use letters, digits, '_' and '-' only`,
		`c.yaml:7:14: warning: endpoint erp url: "http://erp.example.com/h" is plain http to another machine`,
		`c.yaml:7:52: the environment variable NOPE is not set`,
		`c.yaml:8:24: smtp port: "99999" is not a port number`,
		`c.yaml:8:41: smtp security: "ssl" is not one of starttls (port 587), tls (port 465) or none`,
		`c.yaml:8:52: smtp from: "not an address" is not an email address`,
		`c.yaml:8:7: smtp has no host`,
		`c.yaml:9:1: unknown key "sorce" in the configuration; expected source`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}
