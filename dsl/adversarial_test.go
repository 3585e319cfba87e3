package dsl_test

import (
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/dsl"
)

// TestAdversarial feeds shapes that break naive parsers: deep nesting, long
// chains, huge files. Each must finish with the expected outcome.
func TestAdversarial(t *testing.T) {
	tests := []struct {
		name   string
		src    string
		errors int
	}{
		{"else chain", "on new conversation -> assign owner" + strings.Repeat(" else assign owner", 5000), 0},
		{"deep parens", "on new conversation where " + strings.Repeat("(", 5000) + "true" + strings.Repeat(")", 5000) + " -> stop", 0},
		{"many rules", strings.Repeat("on incoming message where lang == 'fr' and channel == 'sms' -> assign group French\n", 2000), 0},
		{"many errors", strings.Repeat("on incomming message -> assign group Frnch\n", 2000), 4000},
		{"open braces", "on new conversation where " + strings.Repeat("{", 5000) + " -> stop", 1},
		{"many semicolons", "on new conversation -> tag a" + strings.Repeat(";", 50000), 0},
		{"many blank lines", strings.Repeat("\n", 100000) + "on new conversation -> stop", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, ds := dsl.Build(dsl.Sources{Rules: []dsl.Source{{Name: "f.rules", Text: []byte(tt.src)}}, Team: fuzzTeam})
			if len(ds) != tt.errors {
				t.Fatalf("got %d diagnostics, want %d; first: %v", len(ds), tt.errors, ds[:min(len(ds), 3)])
			}
			if (rs != nil) != (tt.errors == 0) {
				t.Fatalf("rule set %v with %d errors", rs != nil, len(ds))
			}
		})
	}
}
