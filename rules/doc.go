// Package rules holds example rule sets, one per routing behaviour
// Switchboard reproduces, each with its team, rules and tests. Its Go test
// checks every example and runs its tests, as "switchboard check" and
// "switchboard test" would.
package rules
