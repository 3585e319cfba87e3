// Package suggest finds the likely intended word for a misspelt one.
package suggest

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Closest returns the candidate with the smallest edit distance to word,
// provided the distance is small relative to the word's length.
func Closest(word string, candidates []string) string {
	// The same letters in other code points (an accent composed in one
	// file, decomposed in another) look the same: that is the one meant.
	nw := norm.NFC.String(word)
	for _, c := range candidates {
		if c != word && norm.NFC.String(c) == nw {
			return c
		}
	}
	best, bestDist := "", -1
	lw := strings.ToLower(word)
	// A candidate longer or shorter than word by more than this is too
	// far to be suggested: it is not measured (a team of thousands).
	n := utf8.RuneCountInString(word)
	far := max(1, n/3)
	for _, c := range candidates {
		if diff := utf8.RuneCountInString(c) - n; diff > far || -diff > far {
			continue
		}
		d := editDistance(lw, strings.ToLower(c))
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	limit := max(1, min(len([]rune(word)), len([]rune(best)))/3)
	if bestDist < 0 || (bestDist == 0 && word == best) {
		return ""
	}
	if bestDist <= limit {
		return best
	}
	// A longer spelling of a short name: "language" for "lang".
	for _, c := range candidates {
		if len(c) >= 3 && strings.HasPrefix(lw, strings.ToLower(c)) {
			return c
		}
	}
	return ""
}

// editDistance is the optimal string alignment distance between a and b,
// by runes: insertions, deletions, substitutions and swaps of two adjacent
// runes ("lnag" for "lang") each count one.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
