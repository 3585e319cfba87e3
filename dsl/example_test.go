package dsl_test

import (
	"fmt"

	"github.com/switchboard-dev/switchboard/dsl"
)

func ExampleBuild() {
	rules := []dsl.Source{{Name: "routing.rules", Text: []byte(`
on incoming message where lang == 'fr' → assign group French; notify agent email
on new conversation where contact.langauge == 'es' -> assign group Spanish by least_busy
`)}}
	team := &dsl.Source{Name: "team.yaml", Text: []byte(`
agents:
  - id: amelie
groups:
  French: [amelie]
`)}
	rs, diags := dsl.Build(dsl.Sources{Rules: rules, Team: team})
	fmt.Println(rs == nil)
	for _, d := range diags {
		fmt.Println(d)
	}
	// Output:
	// true
	// routing.rules:3:35: contact has no field "langauge"; did you mean "lang"?
	// routing.rules:3:68: unknown group "Spanish"; add it under groups: in team.yaml
	// routing.rules:3:79: unknown algorithm "least_busy"; did you mean "least_active"?
}
