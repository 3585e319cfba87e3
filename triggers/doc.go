// Package triggers defines the events Switchboard reacts to and what a rule
// condition sees when it runs: the typed environment ([Env]) that every
// condition is compiled against and evaluated on.
//
// It sits at the bottom of the import graph: the rule language (package dsl)
// type-checks conditions against [Env], and the engine fills one [Env] per
// event.
package triggers
