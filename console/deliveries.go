package console

import (
	"net/http"
	"net/url"
	"time"
)

// delivery is one of GET /v1/deliveries.
type delivery struct {
	ID           string     `json:"id"`
	Destination  string     `json:"destination"`
	Conversation string     `json:"conversation"`
	Kind         string     `json:"kind"`
	Status       string     `json:"status"`
	Attempts     int        `json:"attempts"`
	Created      time.Time  `json:"created"`
	Due          *time.Time `json:"next_attempt"`
	Code         int        `json:"code"`
	Error        string     `json:"error"`
	Answer       string     `json:"answer"`
}

// troubleLimit is how many failed and dead deliveries the page lists.
const troubleLimit = 200

// deliveries lists what did not reach its destination: failing (to be
// tried again) and dead (given up), each with a retry button.
func (c *Console) deliveries(w http.ResponseWriter, r *http.Request, v *view) {
	v.Title = "Deliveries"
	data := struct {
		Failed, Dead []delivery
		Done, Error  string
	}{Done: r.URL.Query().Get("retried")}
	for _, st := range []string{"failed", "dead"} {
		var page struct {
			Deliveries []delivery `json:"deliveries"`
		}
		if _, err := c.api(r.Context(), "GET", "/v1/deliveries?status="+st+"&limit=200", nil, &page); err != nil {
			data.Error = "The service did not list the " + st + " deliveries: " + err.Error()
		}
		if st == "failed" {
			data.Failed = page.Deliveries
		} else {
			data.Dead = page.Deliveries
		}
	}
	v.Data = data
	c.render(w, r, http.StatusOK, "deliveries", v)
}

// retry makes a failed or dead delivery again, now.
func (c *Console) retry(w http.ResponseWriter, r *http.Request, v *view) {
	id := r.PathValue("id")
	if _, err := c.api(r.Context(), "POST", "/v1/deliveries/"+url.PathEscape(id)+"/retry", nil, nil); err != nil {
		v.Title = "Deliveries"
		c.fail(w, r, http.StatusConflict, "Delivery "+id+" was not retried: "+err.Error())
		return
	}
	http.Redirect(w, r, "/deliveries?retried="+url.QueryEscape(id), http.StatusSeeOther)
}
