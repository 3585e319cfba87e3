package dsl

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// String renders the action in the rule language, as the formatter would
// (aliases resolved), for traces and logs.
func (a *Assign) String() string {
	var b strings.Builder
	if a.Reassign {
		b.WriteString("reassign ")
	} else {
		b.WriteString("assign ")
	}
	b.WriteString(string(a.Target))
	if a.Name != "" {
		b.WriteString(" " + quoteName(a.Name))
	}
	if a.Target == TargetGroup {
		b.WriteString(" by " + string(a.Algorithm))
	}
	if len(a.Skills) > 0 {
		names := make([]string, len(a.Skills))
		for i, s := range a.Skills {
			names[i] = quoteName(s)
		}
		b.WriteString(" skills [" + strings.Join(names, ", ") + "]")
	}
	switch {
	case a.Cost.Percent > 0:
		b.WriteString(" cost " + strconv.FormatFloat(a.Cost.Percent, 'f', -1, 64) + "%")
	case a.Cost.Units > 0:
		b.WriteString(" cost " + strconv.FormatFloat(a.Cost.Units, 'f', -1, 64))
	}
	if a.Priority != 0 {
		fmt.Fprintf(&b, " priority %d", a.Priority)
	}
	if a.EvenIfOffline {
		b.WriteString(" even if offline")
	}
	if a.IncludingAway {
		b.WriteString(" including away")
	}
	if a.Limit > 0 {
		fmt.Fprintf(&b, " limit %d per %s", a.Limit, FormatDuration(a.LimitPer))
	}
	if a.Offer > 0 {
		b.WriteString(" offer " + FormatDuration(a.Offer))
	}
	return b.String()
}

func (a *Reply) String() string { return "reply " + strconv.Quote(a.Text.Source) }

func (a *Notify) String() string {
	s := "notify " + string(a.To)
	if a.Name != "" {
		s += " " + quoteName(a.Name)
	}
	s += " via " + a.Via
	if a.Text != nil {
		s += " with " + strconv.Quote(a.Text.Source)
	}
	return s
}

func (a *Tag) String() string  { return "tag " + quoteName(a.Name) }
func (a *Set) String() string  { return "set " + a.Path + " = " + a.Value.Source }
func (a *Stop) String() string { return "stop" }

func (a *Untag) String() string    { return "untag " + quoteName(a.Name) }
func (a *Unassign) String() string { return "unassign" }
func (a *Cancel) String() string   { return "cancel" }
func (a *Release) String() string  { return "release" }
func (a *Close) String() string    { return "close" }

// quoteName quotes a name unless it is a plain word.
func quoteName(s string) string {
	toks, err := tokenize("", s)
	if err == nil && len(toks) == 2 && toks[0].Type == tokIdent && toks[0].Value == s && !reserved[s] {
		return s
	}
	return strconv.Quote(s)
}

// reserved are words a bare name cannot be, since the grammar reads them
// as keywords there.
var reserved = map[string]bool{
	"else": true, "by": true, "skills": true, "skill": true, "cost": true, "priority": true,
	"even": true, "including": true, "limit": true, "offer": true, "via": true, "with": true, "then": true, "on": true, "where": true,
}

// FormatDuration writes a duration as the rule language does: 30s, 5m,
// 1h30m, 2d.
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	orig := d
	var b strings.Builder
	for _, u := range []struct {
		unit string
		d    time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}, {"ms", time.Millisecond}} {
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.unit)
			d -= n * u.d
		}
	}
	if d > 0 {
		return orig.String()
	}
	return b.String()
}
