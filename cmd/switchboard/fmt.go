package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/internal/atomicfile"
)

func runFmt(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("fmt", flag.ContinueOnError)
	fl.SetOutput(stderr)
	write := fl.Bool("w", false, "write the result to the file instead of printing it")
	list := fl.Bool("l", false, "list files whose formatting differs, print nothing else")
	fl.Usage = func() {
		fmt.Fprintln(fl.Output(), "usage: switchboard fmt [-w] [-l] FILE|DIR...\n\nPrints rule files in canonical form, comments kept. With no file, formats stdin.")
		fl.PrintDefaults()
	}
	if code, done := parseFlags(fl, args, stdout); done {
		return code
	}
	if fl.NArg() == 0 {
		src, err := io.ReadAll(stdin)
		if err != nil {
			fmt.Fprintf(stderr, "switchboard fmt: %v\n", err)
			return 2
		}
		out, err := dsl.FormatSource("<stdin>", string(src))
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		stdout.Write(out)
		warnMoves(stderr, "<stdin>", string(src), string(out))
		return 0
	}
	var files []string
	for _, a := range fl.Args() {
		info, err := os.Stat(a)
		if err != nil {
			fmt.Fprintf(stderr, "switchboard fmt: %v\n", err)
			return 2
		}
		if !info.IsDir() {
			if filepath.Ext(a) != ".rules" {
				fmt.Fprintf(stderr, "switchboard fmt: %s: fmt formats only .rules files (check reads %s and mapping tables)\n", a, dsl.TeamFile)
				return 2
			}
			files = append(files, a)
			continue
		}
		more, err := dsl.RuleFiles(a)
		if err != nil {
			fmt.Fprintf(stderr, "switchboard fmt: %v\n", err)
			return 2
		}
		files = append(files, more...)
	}
	code := 0
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintf(stderr, "switchboard fmt: %v\n", err)
			code = 1
			continue
		}
		out, err := dsl.FormatSource(name, string(src))
		if err != nil {
			fmt.Fprintln(stderr, err)
			code = 1
			continue
		}
		changed := !bytes.Equal(src, out)
		switch {
		case *list:
			if changed {
				fmt.Fprintln(stdout, name)
			}
		case *write:
			if changed {
				if err := writeRules(name, out); err != nil {
					fmt.Fprintf(stderr, "switchboard fmt: %v\n", err)
					code = 1
					continue
				}
				warnMoves(stderr, name, string(src), string(out))
			}
		default:
			stdout.Write(out)
			warnMoves(stderr, name, string(src), string(out))
		}
	}
	return code
}

// writeRules replaces a rule file whole, keeping its mode; a link stays a
// link, the file it names rewritten.
func writeRules(name string, data []byte) error {
	info, err := os.Stat(name)
	if err != nil {
		return err
	}
	return atomicfile.Write(name, data, info.Mode().Perm())
}

// warnMoves says which unnamed rules formatting moved to another line:
// they are named by their line, so tests and dashboards that name them
// must follow.
func warnMoves(stderr io.Writer, name, before, after string) {
	moves := dsl.MovedRules(name, before, after)
	if len(moves) == 0 {
		return
	}
	const most = 5
	var list []string
	for i, m := range moves {
		if i == most {
			list = append(list, fmt.Sprintf("and %d more", len(moves)-most))
			break
		}
		list = append(list, m.From+" is now "+m.To)
	}
	what := fmt.Sprintf("%d unnamed rules move to other lines", len(moves))
	if len(moves) == 1 {
		what = "an unnamed rule moves to another line"
	}
	fmt.Fprintf(stderr, "switchboard fmt: %s: %s, and a rule without a name is named by its line: %s. Decisions and tests that name it change with it (switchboard test -update, then read the diff); a rule named with rule \"...\" keeps its name wherever it is.\n",
		name, what, strings.Join(list, ", "))
}
