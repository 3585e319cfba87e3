package dsl

import (
	"errors"
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // business_hours must know every zone, whatever the host has
)

// Hours is a parsed business_hours spec such as
// "Mon-Fri 09:00-17:00, Sat 10:00-13:00 Europe/Paris".
type Hours struct {
	Spec  string
	Loc   *time.Location
	Spans []HoursSpan
}

// HoursSpan is one "DAYS HH:MM-HH:MM" part of a spec. A span whose end is
// before its start runs past midnight.
type HoursSpan struct {
	Days     [7]bool // indexed by time.Weekday
	From, To int     // minutes since midnight; To may be 1440
}

var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// ParseHours parses a business_hours spec: one or more "DAYS HH:MM-HH:MM"
// parts separated by commas, then an optional IANA time zone (UTC if none).
// DAYS is a day (Mon) or a range (Mon-Fri); "daily" means every day.
// Every problem in the spec is reported, joined (errors.Join), not only the
// first.
func ParseHours(spec string) (*Hours, error) {
	h := &Hours{Spec: spec, Loc: time.UTC}
	s := strings.TrimSpace(spec)
	if s == "" {
		return nil, fmt.Errorf("empty business hours; write e.g. %q", "Mon-Fri 09:00-17:00 Europe/Paris")
	}
	var errs []error
	// The zone, if any, is the last word and contains a slash or is UTC.
	if i := strings.LastIndexByte(s, ' '); i >= 0 {
		last := s[i+1:]
		if strings.Contains(last, "/") || last == "UTC" || last == "GMT" {
			loc, err := time.LoadLocation(last)
			if err != nil {
				errs = append(errs, fmt.Errorf("unknown time zone %q; use an IANA name such as Europe/Paris", last))
			}
			h.Loc = loc
			s = strings.TrimSpace(s[:i])
		}
	}
	for part := range strings.SplitSeq(s, ",") {
		sp, err := parseSpan(strings.TrimSpace(part))
		errs = append(errs, err)
		h.Spans = append(h.Spans, sp)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return h, nil
}

func parseSpan(part string) (HoursSpan, error) {
	var sp HoursSpan
	var errs []error
	fields := strings.Fields(part)
	if len(fields) != 2 {
		if len(fields) > 2 {
			return sp, fmt.Errorf("%q should be days then hours, e.g. %q; separate spans with commas, and end with a time zone as an IANA name such as America/New_York (abbreviations like EST and offsets like +02:00 are not zones)", part, "Mon-Fri 09:00-17:00")
		}
		return sp, fmt.Errorf("%q should be days then hours, e.g. %q", part, "Mon-Fri 09:00-17:00")
	}
	days, hours := fields[0], fields[1]
	if strings.EqualFold(days, "daily") {
		for i := range sp.Days {
			sp.Days[i] = true
		}
	} else {
		first, last, isRange := strings.Cut(days, "-")
		d1, ok1 := dayNames[strings.ToLower(first)]
		d2 := d1
		ok2 := true
		if isRange {
			d2, ok2 = dayNames[strings.ToLower(last)]
		}
		if !ok1 || !ok2 {
			errs = append(errs, fmt.Errorf("%q is not a day or a day range; use Mon, Tue, Wed, Thu, Fri, Sat, Sun, e.g. Mon-Fri", days))
		}
		for d := d1; ok1 && ok2; d = (d + 1) % 7 {
			sp.Days[d] = true
			if d == d2 {
				break
			}
		}
	}
	from, to, ok := strings.Cut(hours, "-")
	if !ok {
		errs = append(errs, fmt.Errorf("%q should be a time range such as 09:00-17:00", hours))
		return sp, errors.Join(errs...)
	}
	var err1, err2 error
	sp.From, err1 = parseClock(from)
	sp.To, err2 = parseClock(to)
	errs = append(errs, err1, err2)
	if err1 == nil && err2 == nil && sp.From == sp.To {
		errs = append(errs, fmt.Errorf("%q is an empty time range", hours))
	}
	return sp, errors.Join(errs...)
}

func parseClock(s string) (int, error) {
	var hh, mm int
	if n, err := fmt.Sscanf(s, "%d:%d", &hh, &mm); n != 2 || err != nil || len(s) != 5 || hh > 24 || mm > 59 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("%q is not a time of day; write HH:MM, e.g. 09:00", s)
	}
	return hh*60 + mm, nil
}

// Contains reports whether t falls within the business hours.
func (h *Hours) Contains(t time.Time) bool {
	t = t.In(h.Loc)
	day, minute := t.Weekday(), t.Hour()*60+t.Minute()
	yesterday := (day + 6) % 7
	for _, sp := range h.Spans {
		if sp.From < sp.To {
			if sp.Days[day] && minute >= sp.From && minute < sp.To {
				return true
			}
			continue
		}
		// Overnight: the evening part today, the morning part from yesterday.
		if (sp.Days[day] && minute >= sp.From) || (sp.Days[yesterday] && minute < sp.To) {
			return true
		}
	}
	return false
}
