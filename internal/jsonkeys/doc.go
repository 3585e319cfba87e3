// Package jsonkeys holds JSON objects to what the Go decoders let slip:
// encoding/json and goccy/go-json match a key to a field whatever its case
// ("ID" fills id), and keep the last of a key given twice. A client that
// sends {"id": "a", "id": "b"} would have stored b without a word, and a
// proxy or a log reading the first would disagree with Switchboard about
// which event it was.
//
// A Checker walks a document the decoder accepted, guided by the Go type it
// was decoded into: in an object that fills a struct every key must be a
// field's name exactly, and in every object (maps and free-form values
// too) each key may appear once.
package jsonkeys
