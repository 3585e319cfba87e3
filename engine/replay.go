package engine

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/switchboard-dev/switchboard/actions"
	"github.com/switchboard-dev/switchboard/triggers"
)

// LineError is a bad line of an event stream.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }

func (e *LineError) Unwrap() error { return e.Err }

// MaxEventSize is the longest event line accepted.
const MaxEventSize = 1 << 20

// Replay decides every event of a JSON-lines stream in order. For each
// event it calls each with the event's line number, the event and its
// decision (valid until the next call); when each returns false the replay
// stops. Bad lines (malformed, incomplete, a duplicate id, not fitting the
// state) are returned as LineErrors and skipped: the valid events around
// them are all decided. Blank lines are ignored.
func (e *Engine) Replay(r io.Reader, name string, each func(line int, ev *triggers.Event, d *Decision) bool) []error {
	seen := map[string]int{}
	return scan(r, name, func(line int, ev *triggers.Event) (bool, error) {
		if first, dup := seen[ev.ID]; dup {
			return true, &triggers.FieldError{Field: "id", Message: fmt.Sprintf("duplicate event id %q (first on line %d)", ev.ID, first)}
		}
		if tick := e.DueBefore(ev, ev.At); tick != nil {
			if _, dup := seen[tick.ID]; !dup {
				d, err := e.Decide(tick)
				if err != nil {
					return true, err
				}
				seen[tick.ID] = line
				// One that changed nothing is left out, as if folded
				// into the answer's decision.
				if len(d.Actions) > 0 && !each(line, tick, &d) {
					return false, nil
				}
			}
		}
		d, err := e.Decide(ev)
		if err != nil {
			return true, err
		}
		seen[ev.ID] = line
		return each(line, ev, &d), nil
	})
}

// DueBefore returns the tick to decide before ev, which happens at now,
// or nil. An answer to an offer is checked against the offer as it stands
// once the unanswered rules due by then have run (one may have moved the
// conversation on, and the answer is then refused): when one is due, what
// is due fires first, as a tick of its own, at now, and the answer is
// decided after it. (An offer that merely ran out is caught by the
// answer's own check, which says so.) Other events fire what is due as
// part of their own decision.
func (e *Engine) DueBefore(ev *triggers.Event, now time.Time) *triggers.Event {
	if ev.Type != triggers.TypeOfferAccepted && ev.Type != triggers.TypeOfferDeclined {
		return nil
	}
	due, ok := e.NextDue() // (drops the timers that are dead)
	if !ok || len(e.timers) == 0 || e.timers[0].due.After(now) {
		return nil
	}
	return &triggers.Event{ID: triggers.TickID(due), Type: triggers.TypeTick, At: now}
}

// ReplayUntil decides the events of a stream up to the one with id target,
// then hands that one, undecided, to last (to explain it, say). Bad lines
// before it are returned as errors.
func (e *Engine) ReplayUntil(r io.Reader, name, target string, last func(ev *triggers.Event)) []error {
	return scan(r, name, func(_ int, ev *triggers.Event) (bool, error) {
		if tick := e.DueBefore(ev, ev.At); tick != nil {
			if _, err := e.Decide(tick); err != nil {
				return true, err
			}
		}
		if ev.ID == target {
			last(ev)
			return false, nil
		}
		_, err := e.Decide(ev)
		return true, err
	})
}

// scan decodes the event lines of r and hands each event to fn, which says
// whether to go on. Lines that do not decode, and events fn rejects, are
// returned as LineErrors.
func scan(r io.Reader, name string, fn func(line int, ev *triggers.Event) (bool, error)) []error {
	var errs []error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), MaxEventSize)
	line := 0
	for sc.Scan() {
		line++
		data := bytes.TrimSpace(sc.Bytes())
		if len(data) == 0 {
			continue
		}
		ev, err := triggers.DecodeEvent(data, true)
		more := true
		if err == nil {
			more, err = fn(line, ev)
		}
		if err != nil {
			errs = append(errs, &LineError{File: name, Line: line, Err: err})
		}
		if !more {
			return errs
		}
	}
	if err := sc.Err(); err != nil {
		if err == bufio.ErrTooLong {
			err = fmt.Errorf("line longer than %d bytes", MaxEventSize)
		}
		errs = append(errs, &LineError{File: name, Line: line + 1, Err: err})
	}
	return errs
}

// AgentStats is what one agent did over a run.
type AgentStats struct {
	Agent    string
	Assigned int
	PeakLoad string // units, "3/4"
	Open     int
	// Peak and Capacity are PeakLoad's numbers, in units (capacity 0:
	// unlimited).
	Peak, Capacity float64
}

// Stats summarises a run: per agent, and waiting work.
type Stats struct {
	Agents []AgentStats
	// Waited is how many conversations were placed from a waiting line,
	// and how long they waited.
	Waited             int
	WaitTotal          time.Duration
	WaitMax            time.Duration
	StillWaiting       int
	OldestStillWaiting time.Duration
	// Waits are the waits of those placed from a line, in the order
	// they were placed: kept only since StartRun.
	Waits []time.Duration
}

// StartRun begins a run's statistics afresh, from the state as it is: no
// one assigned, each agent's peak load the load they carry now, nothing
// waited. From then on every wait is kept (Stats().Waits) and every
// rule's matches counted (Matches), across reloads. What-if compares two
// runs over the same stretch of traffic this way.
func (e *Engine) StartRun() {
	for a, st := range e.stats.agents {
		*st = agentStats{peak: a.Load}
	}
	e.stats.waited, e.stats.waitTotal, e.stats.waitMax = 0, 0, 0
	e.stats.waits = []time.Duration{}
	e.stats.matched = map[string]int{}
}

// Matches returns how many times each rule matched since StartRun, by
// rule name (a mapping table's rows are rules too); nil before StartRun.
func (e *Engine) Matches() map[string]int {
	if e.stats.matched == nil {
		return nil
	}
	return maps.Clone(e.stats.matched)
}

// Stats reports the run so far.
func (e *Engine) Stats() Stats {
	var s Stats
	for _, a := range e.pool.Agents {
		st := e.stats.agents[a]
		peak := units(st.peak)
		if a.Capacity > 0 {
			peak += "/" + units(a.Capacity)
		}
		s.Agents = append(s.Agents, AgentStats{Agent: a.ID, Assigned: st.assigned, PeakLoad: peak, Open: a.Open,
			Peak: float64(st.peak) / actions.Unit, Capacity: float64(a.Capacity) / actions.Unit})
	}
	s.Waited, s.WaitTotal, s.WaitMax = e.stats.waited, e.stats.waitTotal, e.stats.waitMax
	s.Waits = slices.Clone(e.stats.waits)
	for _, c := range e.convs {
		if c.waiting != nil {
			s.StillWaiting++
			s.OldestStillWaiting = max(s.OldestStillWaiting, e.clock.Sub(c.waiting.Since))
		}
	}
	return s
}
