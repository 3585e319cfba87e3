package console

import "net/http"

// conversation is written by the timeline work.
func (c *Console) conversation(w http.ResponseWriter, r *http.Request, v *view) {
	c.fail(w, r, http.StatusNotImplemented, "not yet")
}
