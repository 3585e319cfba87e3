package whatif

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText writes the report for people: what changes first, then the
// counts that explain it.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "window: %s to %s: records %d to %d, %s\n", stamp(r.From), stamp(r.To), r.First, r.Last, plural(r.Events, "event"))
	decided := r.Rules[0]
	if n := len(r.Rules) - 1; n > 0 {
		decided += fmt.Sprintf(" (then %s)", strings.Join(r.Rules[1:], ", "))
	}
	cand := r.Candidate
	if r.Source != "" {
		cand = r.Source + " (" + r.Candidate + ")"
	}
	fmt.Fprintf(&b, "rules: as decided %s; candidate %s\n\n", decided, cand)

	fmt.Fprintf(&b, "%s routed; %d would go elsewhere\n", plural(r.Conversations, "conversation"), len(r.Moved))
	if len(r.Moved) > 0 {
		t := table(&b)
		fmt.Fprintln(t, "  conversation\tcontact\tbefore\t\tafter")
		for _, m := range r.Moved {
			fmt.Fprintf(t, "  %s\t%s\t%s\tby %s\t%s\tby %s\n", m.Conversation, dash(m.Contact),
				m.Before, dash(m.Before.Rule), m.After, dash(m.After.Rule))
		}
		t.Flush()
	}

	b.WriteString("\nmatches per rule and table row\n")
	t := table(&b)
	fmt.Fprintln(t, "  rule\tbefore\tafter")
	for _, m := range r.Matches {
		fmt.Fprintf(t, "  %s\t%d\t%d%s\n", m.Rule, m.Before, m.After, change(m.Before, m.After))
	}
	t.Flush()

	b.WriteString("\nper agent\n")
	t = table(&b)
	fmt.Fprintln(t, "  agent\tassigned\tpeak load")
	for _, a := range r.Agents {
		fmt.Fprintf(t, "  %s\t%d → %d%s\t%s → %s\n", a.Agent, a.Assigned.Before, a.Assigned.After,
			change(a.Assigned.Before, a.Assigned.After), load(a.Peak.Before, a.Capacity.Before), load(a.Peak.After, a.Capacity.After))
	}
	t.Flush()

	wb, wa := r.Waiting.Before, r.Waiting.After
	fmt.Fprintf(&b, "\nwaiting: placed from a line %d → %d; wait p50 %s → %s, p95 %s → %s; still waiting at the end %d → %d\n",
		wb.Placed, wa.Placed, dur(wb.P50, wb.Placed), dur(wa.P50, wa.Placed), dur(wb.P95, wb.Placed), dur(wa.P95, wa.Placed), wb.StillWaiting, wa.StillWaiting)
	fmt.Fprintf(&b, "notifications %d → %d; replies %d → %d\n", r.Notifications.Before, r.Notifications.After, r.Replies.Before, r.Replies.After)
	if len(r.Refused) > 0 {
		fmt.Fprintf(&b, "\nthe candidate refuses %s (they change nothing in its run):\n", plural(len(r.Refused), "event"))
		for i, f := range r.Refused {
			if i == 10 {
				fmt.Fprintf(&b, "  … and %d more\n", len(r.Refused)-10)
				break
			}
			fmt.Fprintf(&b, "  %s (record %d): %s\n", f.Event, f.Record, f.Reason)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// change marks a count that differs.
func change(before, after int) string {
	switch {
	case after > before:
		return fmt.Sprintf("  (+%d)", after-before)
	case after < before:
		return fmt.Sprintf("  (-%d)", before-after)
	}
	return ""
}

func load(peak, capacity float64) string {
	s := strconv.FormatFloat(peak, 'f', -1, 64)
	if capacity > 0 {
		s += "/" + strconv.FormatFloat(capacity, 'f', -1, 64)
	}
	return s
}

func dur(d time.Duration, n int) string {
	if n == 0 {
		return "-"
	}
	return d.Round(time.Second).String()
}
