package store

import (
	"context"
	"time"
)

// Delivery is one action leaving the service, a webhook to post or an
// email to send: the outbox row. It is stored with the decision that made
// it, in the same transaction, so nothing is delivered that was not
// committed, and it is worked until delivered or dead.
type Delivery struct {
	// ID is the same on every attempt, so receivers can drop duplicates.
	ID string
	// Seq is the record whose decision made it; N its place among that
	// record's deliveries.
	Seq int64
	N   int
	// Destination is where it goes: "platform", "webhook:NAME" or
	// "email".
	Destination string
	// Line orders deliveries: within one destination, a delivery waits
	// until the earlier ones of its line are delivered or dead. It is the
	// conversation; "" puts the delivery in no line.
	Line string
	// Kind is what it carries: "decision", "notify" or "email".
	Kind string
	// Contact is the contact it concerns, for erasure; "" if none.
	Contact string
	// Body is what is sent: a CloudEvent, or an email as JSON. It is empty
	// for a decision sent as it is in the log: the body is then made from
	// Decision and Clock, which the store fills in from the record when it
	// returns the delivery (so that it is not stored twice, and an erasure
	// of the record is an erasure of the delivery).
	Body     []byte
	Decision []byte
	Clock    time.Time

	Status   string // Pending, Failed, Delivered or Dead
	Attempts int
	Created  time.Time
	Due      time.Time // not tried before then
	Expires  time.Time // a failed delivery not delivered by then is dead
	Done     time.Time // when it was delivered or given up; zero while open
	// Code, Error and Answer are from the last attempt (Error also holds
	// why a delivery is dead); Answer is the start of the receiver's body.
	Code   int
	Error  string
	Answer string
}

// Delivery statuses.
const (
	Pending   = "pending"   // not tried yet
	Failed    = "failed"    // tried, and tried again at Due
	Delivered = "delivered" // a receiver took it
	Dead      = "dead"      // given up: a refusal, too old, or nowhere to send it
)

// Attempt is one try at a delivery.
type Attempt struct {
	N     int // from 1
	At    time.Time
	Took  time.Duration
	Code  int    // the receiver's status code; 0 when there was no answer
	Error string // what went wrong; "" on success
}

// Outcome is how one claimed delivery went.
type Outcome struct {
	ID      string
	Status  string    // Delivered, Failed (retried at Due) or Dead
	Due     time.Time // the next attempt, for Failed
	Attempt Attempt
	Answer  string
}

// DeliveryFilter selects deliveries to list.
type DeliveryFilter struct {
	Status      string // "" for any
	Destination string // "" for any
	// After lists the deliveries made after this record; with Within, the
	// deliveries of record After after its N-th too. Deliveries are listed
	// in log order.
	After  int64
	Within bool
	N      int
	Limit  int
}

// DeliveryStats summarises the deliveries not yet delivered or dead.
type DeliveryStats struct {
	Open   int       // pending or failed
	Oldest time.Time // the creation of the oldest open one; zero if none
}

// Outbox is the part of a store that keeps deliveries. Claims hold a lease,
// so that when several processes share a store each delivery is worked by
// one at a time, and one that dies loses its claims when the lease ends.
type Outbox interface {
	// ClaimDeliveries leases up to limit deliveries that are due, for
	// owner until now+lease: only the first open delivery of each line.
	ClaimDeliveries(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]Delivery, error)
	// FinishDeliveries records outcomes of deliveries owner claimed, and
	// lets their leases go. An outcome for a delivery owner no longer
	// holds is ignored.
	FinishDeliveries(ctx context.Context, owner string, outcomes []Outcome) error
	// Deliveries lists deliveries, in log order.
	Deliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error)
	// Delivery returns a delivery and its attempts.
	Delivery(ctx context.Context, id string) (Delivery, []Attempt, bool, error)
	// RetryDelivery makes a failed or dead delivery due at now again, with
	// a new expiry; ok is false when there is no such delivery, it was
	// delivered, or an attempt at it is in flight.
	RetryDelivery(ctx context.Context, id string, now, expires time.Time) (ok bool, err error)
	// DeliveryStats summarises the open deliveries, the feeds' backlogs
	// included.
	DeliveryStats(ctx context.Context) (DeliveryStats, error)

	// OpenFeed starts a feed to dest at record head if there is none, and
	// returns where it is.
	OpenFeed(ctx context.Context, dest string, head int64) (Feed, error)
	// AdvanceFeed records, in one transaction, the deliveries the feed
	// hands to the outbox (each with the outcome of the feed's attempt at
	// it, or a zero Outcome when it was queued without one) and the feed's
	// new cursor. Deliveries already stored are left as they are.
	AdvanceFeed(ctx context.Context, dest string, cursor int64, ds []Delivery, outcomes []Outcome) error
	// CloseFeed forgets the feed to dest: the records from now on are not
	// owed to it. Those it still owed become dead deliveries, dead for why.
	CloseFeed(ctx context.Context, dest, why string) error
}

// A Feed sends every decision of the log to one destination, in log order
// (per line), straight from the log: a decision gets an outbox row only
// when its first attempt fails, or when it must wait behind one that did.
// Decisions the platform takes at once so cost no write at all.
type Feed struct {
	// From is the record the feed began after: the decisions after it are
	// owed to the destination.
	From int64
	// Cursor is how far the feed got: every decision up to it was
	// delivered or handed to the outbox.
	Cursor int64
	// Open counts the open outbox deliveries to the destination, per line:
	// a line with any waits for them.
	Open map[string]int
	// Queued are the records after Cursor that have an outbox delivery to
	// the destination already (handed over just before a crash).
	Queued map[int64]bool
	// Lost is closed when this process no longer holds the feed (its
	// session with a shared database ended): the feed must stop, for
	// another process may take it over. Nil when it cannot be lost.
	Lost <-chan struct{}
	// Held, called before sending, makes sure this process still holds
	// the feed (it may have been frozen past the time another takes a
	// silent holder's feed over); an error means it does not, and Lost is
	// closed. Nil when the feed cannot be lost.
	Held func(context.Context) error
}
