package whatif_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
	"github.com/switchboard-dev/switchboard/whatif"
)

// benchEvents is the window the what-if benchmark replays.
const benchEvents = 500_000

// benchTeam: 40 agents in four language teams, and a table routing by
// language.
func benchSources(row string) dsl.Sources {
	team := "agents:\n"
	groups := map[string][]string{}
	for i := range 40 {
		g := []string{"Spanish", "German", "French", "English"}[i%4]
		team += fmt.Sprintf("  - {id: a%d, capacity: 8, status: online}\n", i)
		groups[g] = append(groups[g], fmt.Sprintf("a%d", i))
	}
	team += "groups:\n"
	for _, g := range []string{"Spanish", "German", "French", "English"} {
		team += fmt.Sprintf("  %s: [%s]\n", g, strings.Join(groups[g], ", "))
	}
	table := "segment,when,group,how,greeting,offline\n" +
		"Spanish,language is es,Spanish,least busy,Hola,wait\n" +
		row +
		"French,language is fr,French,longest idle,Bonjour,wait\n" +
		"Everyone else,,English,round robin,Hello,wait\n"
	return dsl.Sources{
		Team:     &dsl.Source{Name: "team.yaml", Text: []byte(team)},
		Rules:    []dsl.Source{{Name: "routing.rules", Text: []byte("rule \"VIP\" on new conversation where 'vip' in contact.tags -> assign group English by most_available\n")}},
		Mappings: &dsl.Source{Name: "mappings.csv", Text: []byte(table)},
	}
}

func benchRules(b *testing.B, row string) *dsl.RuleSet {
	rs, ds := dsl.Build(benchSources(row))
	if rs == nil {
		b.Fatal(ds)
	}
	return rs
}

// benchLog stores benchEvents events decided under rs: messages opening
// conversations in four languages, and closes that keep the desk busy
// but not full, one event a second.
func benchLog(b *testing.B, rs *dsl.RuleSet) (store.Store, *journal.Journal, time.Time, time.Time) {
	l := newLog(b, rs, 0)
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i := range benchEvents {
		at := start.Add(time.Duration(i) * time.Second).Format(time.RFC3339)
		if i%2 == 0 || i < 40 {
			lang := []string{"es", "de", "fr", "en", "pt"}[(i/2)%5]
			tags := ""
			if i%97 == 0 {
				tags = `, "tags": ["vip"]`
			}
			l.add(fmt.Appendf(nil, `{"id":"e%d","type":"message.received","at":%q,"channel":"whatsapp","to":"+15550100","contact":{"id":"k%d","lang":%q%s},"message":{"id":"m%d","text":"hello"}}`,
				i, at, i/2, lang, tags, i))
		} else {
			l.add(fmt.Appendf(nil, `{"id":"e%d","type":"conversation.closed","at":%q,"conversation":"e%d"}`, i, at, i-39)) // a close of one closed already is refused
		}
	}
	st, j := l.done()
	return st, j, start, start.Add(benchEvents * time.Second)
}

// BenchmarkWhatif: a window of 500,000 stored events replayed under the
// rules that decided it and under a candidate whose table sends German
// speakers elsewhere. Run it with -benchtime 1x: the log is built first.
func BenchmarkWhatif(b *testing.B) {
	rs := benchRules(b, "German,language is de,German,most available,Hallo,wait\n")
	cand := benchRules(b, "German,language is de,English,most available,Hallo,wait\n")
	st, j, from, to := benchLog(b, rs)
	b.ResetTimer()
	var rep *whatif.Report
	for range b.N {
		var err error
		rep, err = whatif.Run(context.Background(), st, j, whatif.Options{From: from, To: to, Candidate: cand})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if rep.Events < benchEvents*9/10 || len(rep.Moved) == 0 {
		b.Fatalf("the window held %d events and moved %d conversations", rep.Events, len(rep.Moved))
	}
	b.ReportMetric(float64(rep.Events), "events")
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/window")
}
