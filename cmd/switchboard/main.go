// Command switchboard checks, formats, tests and runs Switchboard rule sets.
package main

import (
	"fmt"
	"io"
	"os"
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

Run "switchboard COMMAND -h" for a command's options.
`

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
		return runServe(rest, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText)
		return 0
	}
	fmt.Fprintf(stderr, "switchboard: unknown command %q\n\n%s", cmd, usageText)
	return 2
}
