package dsl

import (
	"testing"
	"time"
)

func TestHours(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	at := func(s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04 Mon", s, paris)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	tests := []struct {
		spec string
		at   string
		want bool
	}{
		{"Mon-Fri 09:00-17:00 Europe/Paris", "2026-11-20 09:00 Fri", true},
		{"Mon-Fri 09:00-17:00 Europe/Paris", "2026-11-20 16:59 Fri", true},
		{"Mon-Fri 09:00-17:00 Europe/Paris", "2026-11-20 17:00 Fri", false},
		{"Mon-Fri 09:00-17:00 Europe/Paris", "2026-11-21 10:00 Sat", false},
		{"Mon-Fri 09:00-17:00", "2026-11-20 09:30 Fri", false}, // 08:30 UTC, before 09:00 UTC
		{"Mon-Fri 09:00-17:00", "2026-11-20 10:30 Fri", true},
		{"Sat-Sun 10:00-12:00 Europe/Paris", "2026-11-22 11:00 Sun", true},
		{"Fri-Mon 10:00-12:00 Europe/Paris", "2026-11-23 11:00 Mon", true}, // wraps the week
		{"Fri-Mon 10:00-12:00 Europe/Paris", "2026-11-24 11:00 Tue", false},
		{"Mon-Fri 22:00-06:00 Europe/Paris", "2026-11-20 23:00 Fri", true},
		{"Mon-Fri 22:00-06:00 Europe/Paris", "2026-11-21 05:00 Sat", true}, // Friday night
		{"Mon-Fri 22:00-06:00 Europe/Paris", "2026-11-22 05:00 Sun", false},
		{"Mon 09:00-12:00, Wed 14:00-24:00 Europe/Paris", "2026-11-18 23:59 Wed", true},
		{"daily 08:00-20:00 Europe/Paris", "2026-11-22 08:00 Sun", true},
	}
	for _, tt := range tests {
		h, err := ParseHours(tt.spec)
		if err != nil {
			t.Fatalf("%q: %v", tt.spec, err)
		}
		if got := h.Contains(at(tt.at)); got != tt.want {
			t.Errorf("%q at %s = %v, want %v", tt.spec, tt.at, got, tt.want)
		}
	}
}
