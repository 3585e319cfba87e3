// Package console is the web console a team lead uses without a shell:
// the desk live (agents and their load, waiting lines, the latest
// decisions, each with its explanation), served by serve at / on the same
// port as the API.
//
// Pages are Go templates rendered on the server, readable without
// JavaScript; htmx (vendored, embedded) refreshes parts of them in place.
// The console reads the service through its own JSON API, in process: it
// sees what an integrator sees, and needs nothing of the service's
// insides.
//
// Access: with a service token, people log in with it (a form; the session
// is an HttpOnly, SameSite=Strict cookie, and every write carries a CSRF
// token); without one, the console answers only on loopback.
package console
