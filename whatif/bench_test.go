package whatif_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
	"github.com/switchboard-dev/switchboard/triggers"
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
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(b.TempDir(), "sb.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	var files []store.RuleSetFile
	for _, f := range rs.Sources.Files() {
		files = append(files, store.RuleSetFile{Name: f.Name, Text: string(f.Text)})
	}
	if err := st.SaveRuleSet(ctx, rs.Version, files); err != nil {
		b.Fatal(err)
	}
	eng := engine.New(rs, engine.Options{})
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var recs []store.Record
	for i := range benchEvents {
		at := start.Add(time.Duration(i) * time.Second)
		var line string
		if i%2 == 0 || i < 40 {
			lang := []string{"es", "de", "fr", "en", "pt"}[(i/2)%5]
			tags := ""
			if i%97 == 0 {
				tags = `, "tags": ["vip"]`
			}
			line = fmt.Sprintf(`{"id":"e%d","type":"message.received","at":%q,"channel":"whatsapp","to":"+15550100","contact":{"id":"k%d","lang":%q%s},"message":{"id":"m%d","text":"hello"}}`,
				i, at.Format(time.RFC3339), i/2, lang, tags, i)
		} else {
			line = fmt.Sprintf(`{"id":"e%d","type":"conversation.closed","at":%q,"conversation":"e%d"}`, i, at.Format(time.RFC3339), i-39)
		}
		ev, err := triggers.DecodeEvent([]byte(line), true)
		if err != nil {
			b.Fatal(err)
		}
		var own string
		if ev.Conversation != "" {
			own = eng.ConversationContact(ev.Conversation)
		}
		d, err := eng.DecideAt(ev, at)
		if err != nil {
			continue // a close of a conversation closed already
		}
		sum := sha256.Sum256([]byte(line))
		recs = append(recs, store.Record{Seq: int64(i + 1), ID: ev.ID, Type: ev.Type, At: at, Clock: at,
			Event: []byte(line), Hash: sum[:], Decision: d.AppendJSON(nil), RuleSet: rs.Version, Contacts: eng.Contacts(ev, own, &d)})
		if len(recs) == 5000 {
			if err := st.Append(ctx, recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	if err := st.Append(ctx, recs); err != nil {
		b.Fatal(err)
	}
	return st, journal.New(st, nil, 0), start, start.Add(benchEvents * time.Second)
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
