// Package dsl turns Switchboard rule text into checked, compiled rules.
//
// A rule set is a directory of *.rules files, read in lexical order, and an
// optional team.yaml. [Load] reads one from disk; [Build] compiles one from
// memory. Both return every problem as [Diagnostics] positioned at
// file:line:col, and a [RuleSet] only when there is no error: a rule set is
// never half-loaded. A RuleSet is immutable and safe for concurrent use.
//
// The stages are separate: [ParseFile] splits a file into items (rules and
// segments) and parses each with a participle grammar, so that one mistake
// does not hide the others; [Build] then checks them against the team,
// compiles every condition once with expr against [triggers.Env], and adds
// the rows of a mapping table; [Format] prints a parsed file in canonical
// form, comments kept.
package dsl
