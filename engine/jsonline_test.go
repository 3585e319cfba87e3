package engine_test

import (
	"encoding/json"

	"github.com/switchboard-dev/switchboard/triggers"
)

func jsonLine(ev *triggers.Event) ([]byte, error) {
	b, err := json.Marshal(ev)
	return append(b, '\n'), err
}
