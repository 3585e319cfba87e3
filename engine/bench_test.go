package engine_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/actions"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/triggers"
)

var (
	channels = []string{"whatsapp", "sms", "webchat", "messenger"}
	langs    = []string{"en", "fr", "es", "de", "it", "pt", "nl", "pl", "sv", "da"}
	algs     = []string{"round_robin", "least_active", "longest_idle", "most_available", "random"}
)

// benchTeam is n agents in groups of size, each agent in one group.
func benchTeam(n, groups int) string {
	var b strings.Builder
	b.WriteString("agents:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {id: a%d, capacity: 1000, status: online, skills: [%s]}\n", i, langs[i%len(langs)])
	}
	b.WriteString("groups:\n")
	for g := range groups {
		fmt.Fprintf(&b, "  G%d: [", g)
		for i := g; i < n; i += groups {
			if i > g {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "a%d", i)
		}
		b.WriteString("]\n")
	}
	return b.String()
}

// benchRules is n rules of the shapes ops write: a number or a country, a
// channel, a language, a segment or a function, routed to a group.
func benchRules(n, groups int) string {
	var b strings.Builder
	b.WriteString("segment \"VIP\" where contact.attrs.plan == 'enterprise'\n")
	for i := range n {
		g := i % groups
		switch i % 4 {
		case 0:
			fmt.Fprintf(&b, "on new conversation where conversation.to == '+1555%04d' and lang == '%s' -> assign group G%d by %s\n", i, langs[i%len(langs)], g, algs[i%len(algs)])
		case 1:
			fmt.Fprintf(&b, "on new conversation where channel == '%s' and lang in ['%s', '%s'] and conversation.to == '+1555%04d' and online('G%d') > 0 -> assign group G%d by %s\n", channels[i%len(channels)], langs[i%len(langs)], langs[(i+1)%len(langs)], i, g, g, algs[i%len(algs)])
		case 2:
			fmt.Fprintf(&b, "on new conversation where country == 'C%d' and not contact.is_new -> assign owner else assign group G%d\n", i, g)
		case 3:
			fmt.Fprintf(&b, "on incoming message where conversation.to == '+1555%04d' and text startsWith 'urgent' -> tag urgent\n", i)
		}
	}
	return b.String()
}

func benchEngine(b testing.TB, rules, agents, groups int) *engine.Engine {
	rs, ds := dsl.Build(dsl.Sources{
		Rules: []dsl.Source{{Name: "bench.rules", Text: []byte(benchRules(rules, groups))}},
		Team:  &dsl.Source{Name: "team.yaml", Text: []byte(benchTeam(agents, groups))},
	})
	if rs == nil {
		b.Fatal(ds)
	}
	return engine.New(rs, engine.Options{Seed: 1})
}

// benchEvents is a steady stream: each iteration opens a conversation with
// a message and closes the one opened window events before.
func benchEvents(n, rules, contacts int) []*triggers.Event {
	rng := rand.New(rand.NewPCG(1, 2))
	t0 := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	var evs []*triggers.Event
	const window = 64
	var open []string
	for i := range n {
		at := t0.Add(time.Duration(i) * time.Second)
		r := rng.IntN(rules)
		id := fmt.Sprintf("e%d", i)
		evs = append(evs, &triggers.Event{ID: id, Type: triggers.TypeMessageReceived, At: at,
			Channel: channels[rng.IntN(len(channels))], To: fmt.Sprintf("+1555%04d", r),
			Contact: &triggers.EventContact{ID: fmt.Sprintf("k%d", i%contacts), Lang: langs[rng.IntN(len(langs))], Country: fmt.Sprintf("C%d", r)},
			Message: &triggers.EventMessage{ID: id, Text: "urgent: hello", Lang: langs[rng.IntN(len(langs))]}})
		open = append(open, id)
		if len(open) > window {
			evs = append(evs, &triggers.Event{ID: id + "c", Type: triggers.TypeConversationClosed, At: at, Conversation: open[0]})
			open = open[1:]
		}
	}
	return evs
}

// decide runs the stream in a loop. Events are replayed with fresh ids
// each round, so conversations keep opening and closing.
func decide(b *testing.B, eng *engine.Engine, evs []*triggers.Event) {
	b.ReportAllocs()
	// Warm up: every contact known, every map at its steady size.
	for _, ev := range evs {
		if _, err := eng.Decide(ev); err != nil {
			b.Fatal(err)
		}
	}
	// Conversations opened in the warm-up are still open: close them.
	closeAll(b, eng, evs)
	b.ResetTimer()
	n := 0
	for b.Loop() {
		ev := evs[n%len(evs)]
		if n%len(evs) == 0 && n > 0 {
			b.StopTimer()
			closeAll(b, eng, evs)
			b.StartTimer()
		}
		if _, err := eng.Decide(ev); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "decisions/s")
}

// closeAll closes whatever the stream left open, so it can run again.
func closeAll(b *testing.B, eng *engine.Engine, evs []*triggers.Event) {
	closed := map[string]bool{}
	for _, ev := range evs {
		if ev.Type == triggers.TypeConversationClosed {
			closed[ev.Conversation] = true
		}
	}
	for _, ev := range evs {
		if ev.Type == triggers.TypeMessageReceived && !closed[ev.ID] {
			if _, err := eng.Decide(&triggers.Event{ID: "x", Type: triggers.TypeConversationClosed, At: ev.At, Conversation: ev.ID}); err != nil {
				// Joined an open conversation rather than opening one.
				continue
			}
		}
	}
}

// BenchmarkDecide100: 100 rules over 50 agents in 10 groups.
func BenchmarkDecide100(b *testing.B) {
	eng := benchEngine(b, 100, 50, 10)
	decide(b, eng, benchEvents(4096, 100, 500))
}

// BenchmarkDecide10k: 10,000 rules; the index runs only candidates.
func BenchmarkDecide10k(b *testing.B) {
	eng := benchEngine(b, 10000, 50, 10)
	decide(b, eng, benchEvents(4096, 10000, 500))
}

// BenchmarkPick10k chooses among the members of a 10,000-member group,
// with each algorithm: a pick, then the assignment and its release.
func BenchmarkPick10k(b *testing.B) {
	team, ds := dsl.ParseTeam("team.yaml", []byte(benchTeam(10000, 1)))
	if ds.HasErrors() {
		b.Fatal(ds)
	}
	for _, alg := range []dsl.Algorithm{dsl.RoundRobin, dsl.Random, dsl.LongestIdle, dsl.LeastActive, dsl.MostAvailable} {
		b.Run(string(alg), func(b *testing.B) {
			p := actions.NewPool(team, nil, 1)
			v := p.View(actions.Want{Group: "G0"})
			g := p.Group("G0")
			t := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
			b.ReportAllocs()
			for b.Loop() {
				a := p.Pick(v, alg, nil, nil)
				t = t.Add(time.Millisecond)
				p.Take(a, actions.Unit, "", t)
				p.Turn(g, a)
				p.Release(a, actions.Unit, "", t)
			}
		})
	}
}

// BenchmarkSimulate runs the simulator's loop end to end on a mixed
// JSON-lines stream: decode, decide, encode.
func BenchmarkSimulate(b *testing.B) {
	eng := benchEngine(b, 100, 50, 10)
	evs := benchEvents(20000, 100, 500)
	var in bytes.Buffer
	for i, ev := range evs {
		if i%10 == 5 { // an agent writes back now and then
			fmt.Fprintf(&in, `{"id":"s%d","type":"message.sent","at":%q,"agent":"a%d","contact":{"id":"k%d"}}`+"\n", i, ev.At.Format(time.RFC3339), i%50, i%500)
		}
		line, _ := jsonLine(ev)
		in.Write(line)
	}
	data := in.Bytes()
	lines := bytes.Count(data, []byte("\n"))
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		eng := engine.New(eng.RuleSet(), engine.Options{Seed: 1})
		var buf []byte
		errs := eng.Replay(bytes.NewReader(data), "bench", func(_ int, _ *triggers.Event, d *engine.Decision) bool {
			buf = append(d.AppendJSON(buf[:0]), '\n')
			io.Discard.Write(buf)
			return true
		})
		if len(errs) > 0 {
			b.Fatal(errs[0])
		}
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// contactEvents calls each with the events of n contacts, each with an
// id, name, phone, language and country and one conversation, opened by a
// message and closed; the last open conversations are left open, some
// answered. With plans, every tenth contact has a custom attribute.
func contactEvents(n, open int, plans bool, each func(ev *triggers.Event)) {
	t0 := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	countries := []string{"FR", "ES", "MX", "DE", "IT", "PT", "NL", "PL", "SE", "DK", "US", "GB"}
	for i := range n {
		at := t0.Add(time.Duration(i) * time.Millisecond)
		id := "e" + strconv.Itoa(i)
		ev := &triggers.Event{ID: id, Type: triggers.TypeMessageReceived, At: at,
			Channel: channels[i%len(channels)], To: "+1555" + strconv.Itoa(1000+i%100),
			Contact: &triggers.EventContact{ID: "k" + strconv.Itoa(100000+i), Name: "Contact " + strconv.Itoa(i),
				Phone: "+3361" + strconv.Itoa(1000000+i), Lang: strings.Clone(langs[i%len(langs)]), Country: strings.Clone(countries[i%len(countries)])},
			Message: &triggers.EventMessage{ID: "m" + strconv.Itoa(i), Text: "hello"}}
		if plans && i%10 == 0 {
			ev.Contact.Attrs = map[string]any{"plan": "pro"}
		}
		each(ev)
		switch {
		case i < n-open:
			each(&triggers.Event{ID: id + "c", Type: triggers.TypeConversationClosed, At: at, Conversation: id})
		case i%2 == 0:
			each(&triggers.Event{ID: id + "s", Type: triggers.TypeMessageSent, At: at, Agent: "a" + strconv.Itoa(i%50), Conversation: id})
		}
	}
}

// contactEngine is an engine that knows n contacts (see contactEvents).
func contactEngine(b testing.TB, n, open int) *engine.Engine {
	eng := benchEngine(b, 100, 50, 10)
	contactEvents(n, open, true, func(ev *triggers.Event) {
		if _, err := eng.Decide(ev); err != nil {
			b.Fatal(err)
		}
	})
	return eng
}

// BenchmarkContactMemory measures the heap a known contact takes: a
// million contacts, each with an id, name, phone, language and country and
// one conversation, opened by a message and closed.
func BenchmarkContactMemory(b *testing.B) {
	const n = 1_000_000
	rs := benchEngine(b, 100, 50, 10).RuleSet()
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		eng := engine.New(rs, engine.Options{Seed: 1})
		contactEvents(n, 0, false, func(ev *triggers.Event) {
			if _, err := eng.Decide(ev); err != nil {
				b.Fatal(err)
			}
		})
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/contact")
		runtime.KeepAlive(eng)
	}
}

// BenchmarkSnapshot snapshots an engine that knows 100,000 contacts, 1,000
// of them in an open conversation.
func BenchmarkSnapshot(b *testing.B) {
	eng := contactEngine(b, 100_000, 1000)
	var data []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if data, err = eng.Snapshot(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(data)), "bytes")
	if _, err := engine.Restore(eng.RuleSet(), data); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRestore restores the snapshot of BenchmarkSnapshot.
func BenchmarkRestore(b *testing.B) {
	eng := contactEngine(b, 100_000, 1000)
	data, err := eng.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	var back *engine.Engine
	for b.Loop() {
		if back, err = engine.Restore(eng.RuleSet(), data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(data)), "bytes")
	if again, _ := back.Snapshot(); !bytes.Equal(again, data) {
		b.Fatal("the restored engine snapshots to other bytes")
	}
}

// BenchmarkDecideOffers is BenchmarkDecide100 with routing model v2 in
// play: every group assign offers (offer 30s), a quarter of them under a
// fairness limit, and every agent has a budget per channel. Each offer is
// answered at once, one in eight declined (the next agent is offered it);
// every event, answers included, is a decision.
func BenchmarkDecideOffers(b *testing.B) {
	rules := benchRules(100, 10)
	var out []string
	for i, line := range strings.Split(rules, "\n") {
		if strings.Contains(line, "assign group") {
			line += " offer 30s"
			if i%4 == 0 {
				line = strings.Replace(line, " offer 30s", " limit 400 per 1h offer 30s", 1)
			}
			line = strings.Replace(line, "assign owner else", "assign owner offer 30s else", 1)
		}
		out = append(out, line)
	}
	team := strings.ReplaceAll(benchTeam(50, 10), "capacity: 1000", "capacity: {whatsapp: 300, sms: 300, webchat: 300, default: 300}")
	rs, ds := dsl.Build(dsl.Sources{
		Rules: []dsl.Source{{Name: "bench.rules", Text: []byte(strings.Join(out, "\n"))}},
		Team:  &dsl.Source{Name: "team.yaml", Text: []byte(team)},
	})
	if rs == nil {
		b.Fatal(ds)
	}
	eng := engine.New(rs, engine.Options{Seed: 1})
	evs := benchEvents(4096, 100, 500)
	type pending struct{ agent, conv string }
	var offers []pending
	answer := &triggers.Event{ID: "answer"}
	answered := 0
	// step decides an event and answers every offer it makes, and the
	// offers those answers make; it returns the number of decisions.
	step := func(ev *triggers.Event) int {
		d, err := eng.Decide(ev)
		if err != nil {
			return 0 // joined an open conversation's close, say
		}
		n := 1
		offers = offers[:0]
		for {
			for _, a := range d.Actions {
				if a.Type == engine.ActOffer {
					offers = append(offers, pending{a.Agent, a.Conversation})
				}
			}
			if len(offers) == 0 {
				return n
			}
			o := offers[0]
			offers = offers[1:]
			answered++
			answer.Type = triggers.TypeOfferAccepted
			if answered%8 == 0 {
				answer.Type = triggers.TypeOfferDeclined
			}
			answer.At, answer.Agent, answer.Conversation = ev.At, o.agent, o.conv
			if d, err = eng.Decide(answer); err != nil {
				b.Fatal(err)
			}
			n++
		}
	}
	b.ReportAllocs()
	for _, ev := range evs {
		step(ev)
	}
	closeAll(b, eng, evs)
	b.ResetTimer()
	n, i := 0, 0
	for b.Loop() {
		ev := evs[i%len(evs)]
		if i%len(evs) == 0 && i > 0 {
			b.StopTimer()
			closeAll(b, eng, evs)
			b.StartTimer()
		}
		n += step(ev)
		i++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "decisions/s")
}
