package jsonkeys

import "testing"

func TestLoneSurrogate(t *testing.T) {
	for in, want := range map[string]int{
		`{"id":"plain"}`:                    -1,
		`{"id":"\u00e9\n\"\\"}`:             -1,
		`{"id":"\ud83d\ude00"}`:             -1, // a pair: 😀
		`{"id":"\uD83D\uDE00 and more"}`:    -1,
		`{"id":"\\ud800"}`:                  -1, // a backslash, then text
		`{"id":"s\ud800"}`:                  8,
		`{"id":"s\udbff","x":1}`:            8,
		`{"id":"s\ude00"}`:                  8, // a low half alone
		`{"id":"\ud800\ud800\udc00"}`:       7, // two highs: the first is alone
		`{"id":"\ud800\n"}`:                 7, // followed by another escape
		`{"id":"\ud800`:                     7, // cut short
		`{"id":"\\\ud800"}`:                 9,
		`{"id":"\ud800\u0041"}`:             7,
		`{"id":"x\udc00\ud800\udc00"}`:      8,
		`{"id":"\ud800\udc00\udc00"}`:       19,
		`{"id":"\ud83d\ude00\ud83d"}`:       19,
		`{"id":"\u12"}`:                     -1, // not an escape this checks: the decoder refuses it
		`{"a":"\ud800\udc00","b":"\udfff"}`: 25,
	} {
		if got := LoneSurrogate([]byte(in)); got != want {
			t.Errorf("LoneSurrogate(%s) = %d, want %d", in, got, want)
		}
	}
}
