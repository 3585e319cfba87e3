package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/internal/pgtest"
)

// TestREADME runs README.md top to bottom, as a newcomer on a fresh clone
// would, so that a README that drifts from the code fails. What a fenced
// block means depends on its info string:
//
//   - sh: commands, run in order; each must exit 0.
//   - console: a transcript. "$ COMMAND" lines are run; the lines after one
//     are what it prints (stdout and stderr, as a terminal shows them). A
//     command that fails must be followed by "$ echo $?" and its status.
//   - LANG file=PATH: a file. A file the repository ships must equal the
//     block; any other is written into the sandbox for the commands after it.
//   - text goldens=DIR: diagnostics; each line must be one the golden files
//     in DIR pin.
//   - anything else: an illustration (a grammar, a sketch); it must not
//     look like commands.
//
// Commands run in a copy of the repository's rules/ with the switchboard
// binary built from this tree: "go run ./cmd/switchboard" and
// "switchboard" (after "go install ./cmd/switchboard") are that binary.
// "serve" runs in the background on a free port that stands in for
// localhost:8080, and curl is done in Go (a fresh machine may lack it).
// "go test ./..." is this test's own run; other go test commands
// (benchmarks, fuzzing) are checked to name targets that exist.
//
// UPDATE_README=1 rewrites the outputs shown in console blocks with what
// the commands print now, and the blocks of shipped files with the files;
// read the diff before committing.
func TestREADME(t *testing.T) {
	const root = "../.."
	src, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	sandbox := t.TempDir()
	if err := os.CopyFS(filepath.Join(sandbox, "rules"), os.DirFS(filepath.Join(root, "rules"))); err != nil {
		t.Fatal(err)
	}
	r := &readmeRun{t: t, root: root, dir: sandbox, bin: bin}
	defer r.stopServers()
	blocks := fencedBlocks(string(src))
	if len(blocks) == 0 {
		t.Fatal("README.md has no fenced blocks")
	}
	rewritten := map[int]string{} // blocks' new bodies, for UPDATE_README
	for i, b := range blocks {
		switch {
		case b.attr["file"] != "":
			if shipped, ok := r.file(b); ok {
				rewritten[i] = shipped
			}
		case b.lang == "sh":
			r.commands(b)
		case b.lang == "console":
			rewritten[i] = r.transcript(b)
		case b.attr["goldens"] != "":
			r.goldens(b)
		default:
			for i, line := range strings.Split(b.body, "\n") {
				if strings.HasPrefix(line, "$ ") || strings.HasPrefix(line, "switchboard ") || strings.HasPrefix(line, "go run ") {
					t.Errorf("README.md:%d: a %q block holds a command that is not run; make it a sh or console block", b.line+1+i, b.lang)
				}
			}
		}
	}
	if r.commandsRun < 2 || r.first[0] != "go run ./cmd/switchboard serve" || r.first[1] != "go test ./..." {
		t.Errorf("README's first commands are %q; they must run the service, then the tests", r.first)
	}
	if os.Getenv("UPDATE_README") != "" {
		var out strings.Builder
		lines := strings.SplitAfter(string(src), "\n")
		next := 0
		for i, b := range blocks {
			body, ok := rewritten[i]
			if !ok {
				continue
			}
			out.WriteString(strings.Join(lines[next:b.line], ""))
			out.WriteString(body)
			next = b.line + strings.Count(b.body, "\n")
		}
		out.WriteString(strings.Join(lines[next:], ""))
		if err := os.WriteFile(filepath.Join(root, "README.md"), []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// block is one fenced block of the README.
type block struct {
	line int // index of the first line of the body (0-based)
	lang string
	attr map[string]string
	body string // the lines between the fences, each ending in \n
}

func fencedBlocks(src string) []block {
	var out []block
	lines := strings.SplitAfter(src, "\n")
	for i := 0; i < len(lines); i++ {
		info, ok := strings.CutPrefix(strings.TrimRight(lines[i], "\n"), "```")
		if !ok {
			continue
		}
		b := block{line: i + 1, attr: map[string]string{}}
		fields := strings.Fields(info)
		if len(fields) > 0 {
			b.lang = fields[0]
			for _, f := range fields[1:] {
				k, v, _ := strings.Cut(f, "=")
				b.attr[k] = v
			}
		}
		var body strings.Builder
		for i++; i < len(lines) && strings.TrimRight(lines[i], "\n") != "```"; i++ {
			body.WriteString(lines[i])
		}
		b.body = body.String()
		out = append(out, b)
	}
	return out
}

// readmeRun is the state of a README run: its sandbox, the last exit
// status, and the services it started.
type readmeRun struct {
	t           *testing.T
	root, dir   string
	bin         string
	status      int
	servers     []*exec.Cmd
	logs        []*bytes.Buffer // the services' logs, read once they stopped
	addr        string          // the address standing in for localhost:8080
	commandsRun int
	first       []string
	// pg maps the databases the README creates (createdb NAME) to test
	// databases; noPG is set when there is no PostgreSQL to test against
	// (outside CI), and the README's PostgreSQL commands are skipped.
	pg   map[string]string
	noPG bool
}

func (r *readmeRun) where(b block, i int) string { return fmt.Sprintf("README.md:%d", b.line+1+i) }

// file checks a block against the file the repository ships, and
// returns the shipped text; a file the repository does not ship is written
// into the sandbox.
func (r *readmeRun) file(b block) (string, bool) {
	path := filepath.FromSlash(b.attr["file"])
	if shipped, err := os.ReadFile(filepath.Join(r.root, path)); err == nil {
		if string(shipped) != b.body {
			r.t.Errorf("%s: the block for %s differs from the file in the repository:\n%s", r.where(b, -1), path, lineDiff(b.body, string(shipped)))
		}
		return string(shipped), true
	}
	full := filepath.Join(r.dir, path)
	os.MkdirAll(filepath.Dir(full), 0o755)
	if err := os.WriteFile(full, []byte(b.body), 0o644); err != nil {
		r.t.Fatal(err)
	}
	return "", false
}

func (r *readmeRun) commands(b block) {
	cmds, err := splitCommands(b.body)
	if err != nil {
		r.t.Errorf("%s: %v", r.where(b, 0), err)
		return
	}
	for _, c := range cmds {
		out, code := r.run(b, c)
		if code != 0 {
			r.t.Errorf("%s: %s: exit %d\n%s", r.where(b, c.line), c.text, code, out)
		}
	}
}

// transcript runs the commands of a console block and compares what they
// print with what the block shows. It returns the block as it would be
// with what they print now.
func (r *readmeRun) transcript(b block) string {
	lines := strings.Split(strings.TrimSuffix(b.body, "\n"), "\n")
	var now strings.Builder
	for i := 0; i < len(lines); {
		if !strings.HasPrefix(lines[i], "$ ") {
			r.t.Errorf("%s: a console block starts each command with \"$ \"", r.where(b, i))
			return b.body
		}
		start := i
		text := strings.TrimPrefix(lines[i], "$ ")
		cmds, err := splitCommands(text)
		for i++; err == errIncomplete && i < len(lines); i++ {
			text += "\n" + lines[i]
			cmds, err = splitCommands(text)
		}
		if err != nil || len(cmds) != 1 {
			r.t.Errorf("%s: %q is not one command (%v)", r.where(b, start), text, err)
			return b.body
		}
		var want []string
		for ; i < len(lines) && !strings.HasPrefix(lines[i], "$ "); i++ {
			want = append(want, lines[i])
		}
		c := cmds[0]
		c.line = start
		out, code := r.run(b, c)
		for _, l := range lines[start : start+strings.Count(text, "\n")+1] {
			now.WriteString(l + "\n")
		}
		now.WriteString(out)
		if code != 0 && !(i < len(lines) && lines[i] == "$ echo $?") {
			r.t.Errorf("%s: %s: exit %d, and the README does not show the status with echo $?\n%s", r.where(b, start), c.text, code, out)
		}
		got, wantText := normalizeOutput(out), normalizeOutput(strings.Join(want, "\n"))
		if c.words[0] == "curl" {
			// The service runs on its own clock.
			got, wantText = wallClock.ReplaceAllString(got, "TIME"), wallClock.ReplaceAllString(wantText, "TIME")
		}
		if got != wantText {
			r.t.Errorf("%s: %s prints something else than the README shows:\n%s", r.where(b, start), c.text, lineDiff(wantText, got))
		}
	}
	return now.String()
}

var wallClock = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)

func normalizeOutput(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t\r")
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n")
}

func (r *readmeRun) goldens(b block) {
	dir := filepath.Join(r.root, b.attr["goldens"])
	known := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		for _, l := range strings.Split(string(data), "\n") {
			known[l] = true
		}
		return err
	})
	if err != nil {
		r.t.Errorf("%s: %v", r.where(b, -1), err)
		return
	}
	for i, l := range strings.Split(strings.TrimSuffix(b.body, "\n"), "\n") {
		if !known[l] {
			r.t.Errorf("%s: no golden file in %s pins this diagnostic:\n%s", r.where(b, i), b.attr["goldens"], l)
		}
	}
}

var envAssignment = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`)

// run runs one command of the README and returns what it printed and its
// exit status.
func (r *readmeRun) run(b block, c command) (string, int) {
	r.t.Helper()
	if r.commandsRun < 2 {
		r.first = append(r.first, strings.Join(c.words, " "))
	}
	r.commandsRun++
	words, env := c.words, []string{}
	for len(words) > 0 && envAssignment.MatchString(words[0]) {
		env = append(env, words[0])
		words = words[1:]
	}
	if len(words) >= 3 && words[0] == "go" && words[1] == "run" && words[2] == "./cmd/switchboard" {
		words = append([]string{"switchboard"}, words[3:]...)
	}
	var out string
	code := 0
	switch {
	case len(words) == 0:
	case words[0] == "echo" && len(words) == 2 && words[1] == "$?":
		out = strconv.Itoa(r.status) + "\n"
	case words[0] == "createdb" && len(words) == 2:
		// A database of the test's own stands in for NAME on the local
		// server.
		if !pgtest.Available(r.t) {
			r.noPG = true
			r.t.Logf("%s: no PostgreSQL to test against: skipped", r.where(b, c.line))
			break
		}
		if r.pg == nil {
			r.pg = map[string]string{}
		}
		r.pg[words[1]] = pgtest.URL(r.t)
	case words[0] == "switchboard" && len(words) > 1 && words[1] == "serve":
		r.serve(b, c, words[2:])
	case words[0] == "switchboard":
		out, code = r.exec(append([]string{r.bin}, words[1:]...), env)
	case words[0] == "curl":
		out, code = r.curl(b, c, words[1:])
	case slices.Equal(words, []string{"go", "install", "./cmd/switchboard"}):
		// The binary built from this tree stands in for the installed one.
		if _, err := os.Stat(filepath.Join(r.root, "cmd", "switchboard")); err != nil {
			r.t.Errorf("%s: %v", r.where(b, c.line), err)
		}
	case slices.Equal(words, []string{"go", "test", "./..."}):
		// This test is part of that run.
	case len(words) > 2 && words[0] == "go" && words[1] == "test":
		r.goTestTargets(b, c, words[2:])
	default:
		r.t.Errorf("%s: the README test does not know how to run %q; teach it (readme_test.go) or show it another way", r.where(b, c.line), c.text)
	}
	if words == nil || words[0] != "echo" {
		r.status = code
	}
	return out, code
}

func (r *readmeRun) exec(argv, env []string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = r.dir
	cmd.Env = append(cleanEnv(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		return err.Error(), -1
	}
	// Paths print as the README shows them, relative to where it runs.
	return strings.ReplaceAll(out.String(), r.dir+string(filepath.Separator), ""), cmd.ProcessState.ExitCode()
}

// cleanEnv is the environment without what would change how the README's
// commands behave.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			env = append(env, kv)
		}
	}
	return env
}

// serve starts the service in the background on a free port and waits
// until it answers.
func (r *readmeRun) serve(b block, c command, args []string) {
	addr := freeAddr(r.t)
	shared := false
	for i := 0; i < len(args); i++ {
		if args[i] == "--addr" && i+1 < len(args) {
			args = slices.Delete(args, i, i+2)
			i--
			continue
		}
		if args[i] == "--data" && i+1 < len(args) && isPostgres(args[i+1]) {
			if r.noPG {
				return
			}
			u, err := url.Parse(args[i+1])
			test, ok := r.pg[strings.TrimPrefix(u.Path, "/")]
			if err != nil || !ok {
				r.t.Errorf("%s: %s: no createdb made that database", r.where(b, c.line), args[i+1])
				return
			}
			args[i+1], shared = test, true
		}
	}
	cmd := exec.Command(r.bin, append([]string{"serve", "--addr", addr}, args...)...)
	cmd.Dir = r.dir
	cmd.Env = cleanEnv()
	logs := &bytes.Buffer{}
	cmd.Stderr = logs
	r.logs = append(r.logs, logs)
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("%s: %v", r.where(b, c.line), err)
	}
	r.servers = append(r.servers, cmd)
	waitHealthy(r.t, addr)
	if !shared {
		r.addr = addr // the README's localhost:8080
	}
}

func (r *readmeRun) stopServers() {
	for _, cmd := range r.servers {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	if r.t.Failed() {
		for _, l := range r.logs {
			r.t.Logf("service log:\n%s", l.String())
		}
	}
}

// curl does what curl does with the options the README uses.
func (r *readmeRun) curl(b block, c command, args []string) (string, int) {
	method, url := "", ""
	var body io.Reader
	header := http.Header{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		arg := func() string {
			i++
			if i >= len(args) {
				r.t.Errorf("%s: curl %s needs a value", r.where(b, c.line), a)
				return ""
			}
			return args[i]
		}
		switch a {
		case "-s", "--silent":
		case "-X", "--request":
			method = arg()
		case "-d", "--data", "--data-binary":
			v := arg()
			if name, ok := strings.CutPrefix(v, "@"); ok {
				data, err := os.ReadFile(filepath.Join(r.dir, name))
				if err != nil {
					return "curl: " + err.Error() + "\n", 26
				}
				v = string(data)
			}
			body = strings.NewReader(v)
			if method == "" {
				method = http.MethodPost
			}
		case "-H", "--header":
			k, v, _ := strings.Cut(arg(), ":")
			header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		default:
			if strings.HasPrefix(a, "-") || url != "" {
				r.t.Errorf("%s: the README test's curl does not know %q", r.where(b, c.line), a)
				return "", 2
			}
			url = a
		}
	}
	if r.addr == "" {
		return "curl: (7) Failed to connect: nothing is serving\n", 7
	}
	for _, local := range []string{"localhost:8080", "127.0.0.1:8080"} {
		url = strings.Replace(url, local, r.addr, 1)
	}
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return "curl: " + err.Error() + "\n", 3
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "curl: " + err.Error() + "\n", 7
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return string(data), 0
}

// goTestTargets checks that a go test command for benchmarks or fuzzing
// names packages and targets that exist.
func (r *readmeRun) goTestTargets(b block, c command, args []string) {
	var pkgs []string
	patterns := map[string]string{} // "Benchmark" or "Fuzz" to the pattern
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-bench" || a == "-fuzz":
			if i+1 < len(args) {
				kind := map[string]string{"-bench": "Benchmark", "-fuzz": "Fuzz"}[a]
				patterns[kind] = args[i+1]
			}
			i++
		case a == "-run" || a == "-benchtime" || a == "-count" || a == "-fuzztime":
			i++
		case strings.HasPrefix(a, "./"):
			pkgs = append(pkgs, a)
		case strings.HasPrefix(a, "-"):
		}
	}
	if len(pkgs) == 0 || len(patterns) == 0 {
		r.t.Errorf("%s: %s: the README test runs only go test ./...; other go test commands must name a package and -bench or -fuzz", r.where(b, c.line), c.text)
		return
	}
	decl := regexp.MustCompile(`(?m)^func ((?:Benchmark|Fuzz)\w*)\(`)
	for _, pkg := range pkgs {
		var names []string
		files, _ := filepath.Glob(filepath.Join(r.root, pkg, "*_test.go"))
		if len(files) == 0 {
			r.t.Errorf("%s: %s: package %s has no tests", r.where(b, c.line), c.text, pkg)
			continue
		}
		for _, f := range files {
			data, _ := os.ReadFile(f)
			for _, m := range decl.FindAllStringSubmatch(string(data), -1) {
				names = append(names, m[1])
			}
		}
		for kind, pat := range patterns {
			re, err := regexp.Compile(pat)
			if err != nil {
				r.t.Errorf("%s: %s: %v", r.where(b, c.line), c.text, err)
				continue
			}
			matched := 0
			for _, n := range names {
				if strings.HasPrefix(n, kind) && re.MatchString(n) {
					matched++
				}
			}
			if matched == 0 || (kind == "Fuzz" && matched > 1) {
				r.t.Errorf("%s: %s: %s functions matching %q: %d in %s", r.where(b, c.line), c.text, kind, pat, matched, pkg)
			}
		}
	}
}

// command is one shell command of the README: its words after quoting,
// and where it starts.
type command struct {
	text  string
	words []string
	line  int // line within the block
}

var errIncomplete = fmt.Errorf("the command is not finished (an open quote or a trailing backslash)")

// splitCommands splits shell text into commands and words, as sh does for
// the forms the README uses: quotes, backslash-newline, comments and one
// command per line.
func splitCommands(src string) ([]command, error) {
	var cmds []command
	var words []string
	var word strings.Builder
	inWord := false
	rs := []rune(src)
	line, startLine, startAt := 0, 0, -1
	endWord := func() {
		if inWord {
			words = append(words, word.String())
			word.Reset()
			inWord = false
		}
	}
	endCommand := func(at int) {
		endWord()
		if len(words) > 0 {
			cmds = append(cmds, command{text: strings.TrimSpace(string(rs[startAt:at])), words: words, line: startLine})
		}
		words, startAt = nil, -1
	}
	for i := 0; i < len(rs); i++ {
		ch := rs[i]
		if startAt < 0 && ch != ' ' && ch != '\t' && ch != '\n' && ch != '#' {
			startAt, startLine = i, line
		}
		switch {
		case ch == '\n':
			endCommand(i)
			line++
		case ch == '#' && !inWord:
			for i+1 < len(rs) && rs[i+1] != '\n' {
				i++
			}
		case ch == ' ' || ch == '\t':
			endWord()
		case ch == '\\':
			if i+1 >= len(rs) {
				return nil, errIncomplete
			}
			i++
			if rs[i] == '\n' {
				line++
				endWord()
				continue
			}
			word.WriteRune(rs[i])
			inWord = true
		case ch == '\'':
			inWord = true
			j := i + 1
			for j < len(rs) && rs[j] != '\'' {
				j++
			}
			if j >= len(rs) {
				return nil, errIncomplete
			}
			word.WriteString(string(rs[i+1 : j]))
			line += strings.Count(string(rs[i+1:j]), "\n")
			i = j
		case ch == '"':
			inWord = true
			j := i + 1
			for ; j < len(rs) && rs[j] != '"'; j++ {
				if rs[j] == '\\' && j+1 < len(rs) && strings.ContainsRune(`"\$`+"`", rs[j+1]) {
					j++
				}
				word.WriteRune(rs[j])
			}
			if j >= len(rs) {
				return nil, errIncomplete
			}
			line += strings.Count(string(rs[i+1:j]), "\n")
			i = j
		default:
			word.WriteRune(ch)
			inWord = true
		}
	}
	if startAt >= 0 {
		endCommand(len(rs))
	}
	return cmds, nil
}

// lineDiff shows two texts line by line, "-" for the README's and "+" for
// what the command printed.
func lineDiff(want, got string) string {
	var b strings.Builder
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl == gl {
			fmt.Fprintf(&b, "  %s\n", wl)
			continue
		}
		if i < len(w) {
			fmt.Fprintf(&b, "- %s\n", wl)
		}
		if i < len(g) {
			fmt.Fprintf(&b, "+ %s\n", gl)
		}
	}
	return b.String()
}
