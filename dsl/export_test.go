package dsl

// Meaning is src's significant tokens, with what fmt may change made
// one: an arrow and "then", the line breaks and semicolons between
// actions, "skill x" and "skills [x]", a byte-order mark. Two texts with
// the same meaning compile to the same rules.
func Meaning(src string) ([]string, error) {
	l, err := lex.LexString("f.rules", src)
	if err != nil {
		return nil, err
	}
	var out []string
	skill := false
	for {
		t, err := l.Next()
		if err != nil {
			return nil, err
		}
		if t.EOF() {
			return out, nil
		}
		if !significant(t) || t.Value == ";" || t.Value == "\ufeff" {
			continue
		}
		v := t.Value
		switch {
		case v == "→" || v == "then":
			v = "->"
		case v == "skill":
			skill = true
			out = append(out, "skills", "[")
			continue
		case skill:
			skill = false
			out = append(out, v, "]")
			continue
		}
		out = append(out, v)
	}
}
