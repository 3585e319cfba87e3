// Command switchboard checks, formats, tests and runs Switchboard rule sets.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/switchboard-dev/switchboard/internal/suggest"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usageText = `switchboard routes customer conversations to agents by rules.

Usage:
  switchboard check [--json] DIR|FILE...   check rule sets (DIR/... for every rule set below DIR)
  switchboard fmt [-w] [-l] FILE|DIR...    print rule files in canonical form
  switchboard simulate --rules DIR --events FILE [--seed N]
                                           decide a JSON-lines stream of events
  switchboard explain --rules DIR --events FILE --event ID
                                           show why one event went where it went
  switchboard test [-update] DIR...        run rule sets' own tests (DIR/tests/*.txtar)
  switchboard serve [--rules DIR] [--addr HOST:PORT] [--data FILE]
                                           run the routing service
  switchboard whatif --rules DIR [--data FILE] [--since 7d] [--json]
                                           what other rules would have done with the stored traffic

  switchboard version                      print the version and the revision it was built from

Run "switchboard help COMMAND" (or "switchboard COMMAND -h") for a command's options.
`

var commands = []string{"check", "fmt", "simulate", "explain", "test", "serve", "whatif", "version", "help"}

// run is the whole program, minus the process: it returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "check":
		return runCheck(rest, stdout, stderr)
	case "fmt":
		return runFmt(rest, stdin, stdout, stderr)
	case "simulate":
		return runSimulate(rest, stdin, stdout, stderr)
	case "explain":
		return runExplain(rest, stdin, stdout, stderr)
	case "test":
		return runTest(rest, stdout, stderr)
	case "serve":
		return runServe(rest, stdout, stderr)
	case "whatif", "what-if":
		return runWhatif(rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, version())
		return 0
	case "help", "-h", "--help":
		if len(rest) > 0 && rest[0] != "help" {
			return run([]string{rest[0], "-h"}, stdin, stdout, stderr)
		}
		fmt.Fprint(stdout, usageText)
		return 0
	}
	hint := ""
	if s := suggest.Closest(cmd, commands); s != "" {
		hint = fmt.Sprintf("; did you mean %q?", s)
	}
	fmt.Fprintf(stderr, "switchboard: unknown command %q%s\n\n%s", cmd, hint, usageText)
	return 2
}

// parseFlags parses a command's flags. Asked for help (-h, --help), it
// prints the command's usage on stdout and is done with 0; a bad flag is
// done with 2.
func parseFlags(fl *flag.FlagSet, args []string, stdout io.Writer) (code int, done bool) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fl.SetOutput(stdout)
		}
	}
	// Flags may come after the paths too (check DIR --json), as people
	// type them: parse, set a path aside, parse the rest.
	var paths []string
	for {
		switch err := fl.Parse(args); {
		case errors.Is(err, flag.ErrHelp):
			return 0, true
		case err != nil:
			return 2, true
		}
		rest := fl.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			paths = append(paths, rest...) // after --, everything is a path
			break
		}
		paths = append(paths, rest[0])
		args = rest[1:]
	}
	fl.Parse(append([]string{"--"}, paths...))
	return 0, false
}

// flagSet reports whether the flag was given on the command line.
func flagSet(fl *flag.FlagSet, name string) bool {
	set := false
	fl.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// version is the module version and the revision it was built from.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "switchboard (no build information)"
	}
	v := "switchboard " + info.Main.Version
	var rev, when, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = " (modified)"
			}
		}
	}
	if rev != "" {
		v += " " + rev + dirty
		if when != "" {
			v += " " + when
		}
	}
	return v + " " + info.GoVersion
}
