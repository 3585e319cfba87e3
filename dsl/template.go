package dsl

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/switchboard-dev/switchboard/triggers"
)

// Template is a text with {{placeholders}}, checked at compile time.
type Template struct {
	Source string
	Parts  []TemplatePart
}

// TemplatePart is literal text, or a placeholder when Field is set.
type TemplatePart struct {
	Text  string
	Field string
}

// MarshalJSON renders the template as its source text.
func (t *Template) MarshalJSON() ([]byte, error) { return json.Marshal(t.Source) }

// Fields lists the placeholders the template uses.
func (t *Template) Fields() []string {
	var out []string
	for _, p := range t.Parts {
		if p.Field != "" {
			out = append(out, p.Field)
		}
	}
	return out
}

// placeholders lists every valid placeholder but contact.attrs.KEY, which
// accepts any key. agent and owner are the assigned agent and the contact's
// owner, with their team.yaml details.
var placeholders = func() []string {
	var out []string
	add := func(prefix string, v any, skip ...string) {
		t := reflect.TypeOf(v)
		for i := range t.NumField() {
			tag := t.Field(i).Tag.Get("expr")
			if tag == "" || slices.Contains(skip, tag) {
				continue
			}
			out = append(out, prefix+tag)
		}
	}
	add("message.", triggers.Message{}, "at")
	add("contact.", triggers.Contact{}, "attrs", "is_new", "tags")
	add("conversation.", triggers.Conversation{}, "created_at", "is_new", "tags")
	for _, who := range []string{"agent.", "owner."} {
		out = append(out, who+"id", who+"name", who+"email")
	}
	return append(out, "lang", "channel", "text", "country")
}()

const attrsPrefix = "contact.attrs."

// parseTemplate splits text into literal parts and placeholders. raw is the
// string as written (with its quotes) and at its position, so that a bad
// placeholder is reported where it stands.
var singleBrace = regexp.MustCompile(`(?:^|[^{]){\s*([a-z_]+\.[a-z_.]+)\s*}(?:[^}]|$)`)

func parseTemplate(text, raw string, at Pos, d *diags) *Template {
	t := &Template{Source: text}
	// {contact.name} with single braces would go out as written.
	if m := singleBrace.FindStringSubmatchIndex(text); m != nil {
		field := text[m[2]:m[3]]
		if slices.Contains(placeholders, field) || strings.HasPrefix(field, attrsPrefix) {
			d.warnf(at, CodePlaceholder, "write {{"+field+"}}", "{%s} has single braces, so it is sent as written, not filled in", field)
		}
	}
	rawSearch := 0
	for rest := text; rest != ""; {
		i := strings.Index(rest, "{{")
		if i < 0 {
			t.Parts = append(t.Parts, TemplatePart{Text: rest})
			break
		}
		if i > 0 {
			t.Parts = append(t.Parts, TemplatePart{Text: rest[:i]})
		}
		// Find the same "{{" in the raw text to report its column.
		pos := at
		if j := strings.Index(raw[rawSearch:], "{{"); j >= 0 {
			pos.Col += len([]rune(raw[:rawSearch+j]))
			pos.Offset += rawSearch + j
			rawSearch += j + 2
		}
		rest = rest[i+2:]
		end := strings.Index(rest, "}}")
		if end < 0 {
			d.errorf(pos, CodePlaceholder, "close it with }}", "unclosed placeholder {{%s", rest)
			return t
		}
		field := strings.TrimSpace(rest[:end])
		rest = rest[end+2:]
		switch {
		case field == "":
			d.errorf(pos, CodePlaceholder, "write e.g. {{contact.name}}", "empty placeholder {{}}")
		case strings.HasPrefix(field, attrsPrefix) && len(field) > len(attrsPrefix):
		case !slices.Contains(placeholders, field):
			hint := didYouMean(field, placeholders)
			if hint == "" {
				hint = "placeholders are message.*, contact.*, contact.attrs.*, conversation.*, agent.* and owner.* fields"
			}
			d.errorf(pos, CodePlaceholder, hint, "unknown placeholder {{%s}}", field)
		}
		t.Parts = append(t.Parts, TemplatePart{Field: field})
	}
	return t
}

// unquote reads a "double" or 'single' quoted string as written in a rule.
func unquote(s string) (string, error) {
	if len(s) >= 2 && s[0] == '\'' && s[len(s)-1] == '\'' {
		body := s[1 : len(s)-1]
		body = strings.ReplaceAll(body, `\'`, `'`)
		body = strings.ReplaceAll(body, `"`, `\"`)
		s = `"` + body + `"`
	}
	out, err := strconv.Unquote(s)
	if err != nil {
		return "", fmt.Errorf("invalid escape in %s; use \\\" for a quote and \\\\ for a backslash", s)
	}
	return out, nil
}
