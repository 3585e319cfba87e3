package console

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/internal/atomicfile"
	"github.com/switchboard-dev/switchboard/service"
	"github.com/switchboard-dev/switchboard/whatif"
)

// The mapping table editor. The whole edit lives in the page's form: the
// cells, and the hash of the file as it was when the editor opened it.
// Every button posts the form back; the server keeps nothing between two
// requests, so the page works without JavaScript, and with htmx the cells
// are checked as they are typed.

// Limits of an edited table, well above any table people keep by hand.
const (
	maxRows    = 2000
	maxCols    = 20
	maxCellLen = 2000 // characters
	// maxCells keeps a table's form under the fields a form may have
	// (net/url reads up to 10,000).
	maxCells    = 9000
	previewDays = 7
	// noFile is the base of a table that did not exist when the editor
	// opened.
	noFile = "none"
)

// grid is a mapping table as the editor holds it.
type grid struct {
	File   string // the table's path, as check names it
	Comma  rune
	Header []string
	Rows   [][]string
	Base   string // the hash of the file when the editor opened it, or noFile
	// BOM and CRLF keep the file as a spreadsheet saved it: a byte order
	// mark first, lines ending in CR LF.
	BOM, CRLF bool
}

// hashOf is a file's content hash, as the editor's form carries it.
func hashOf(b []byte) string {
	if b == nil {
		return noFile
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:16])
}

// tablePath is the mapping table of the rule set directory.
func (c *Console) tablePath() string { return filepath.Join(c.cfg.Rules, dsl.MappingsCSV) }

// errYAMLTable: the editor edits CSV tables.
var errYAMLTable = errors.New("this rule set's table is mappings.yaml; the editor edits mappings.csv tables. Edit mappings.yaml in the rule set's directory, or convert it to mappings.csv")

// readGrid reads the table on disk: the file's bytes too, nil when there
// is none (the editor then starts a new table with the usual columns).
func (c *Console) readGrid() (*grid, []byte, error) {
	path := c.tablePath()
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, yerr := os.Stat(filepath.Join(c.cfg.Rules, dsl.MappingsYAML)); yerr == nil {
			return nil, nil, errYAMLTable
		}
		return &grid{File: path, Comma: ',', Header: []string{"segment", "when", "group", "how", "greeting", "offline"}, Base: noFile}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	g, err := parseGrid(path, data)
	if err != nil {
		return nil, nil, err
	}
	g.Base = hashOf(data)
	return g, data, nil
}

// parseGrid reads a CSV table into cells, as check reads it (a header
// row; semicolons when the first line has more of them than commas).
func parseGrid(path string, data []byte) (*grid, error) {
	g := &grid{File: path, Comma: ',', BOM: bytes.HasPrefix(data, []byte("\xef\xbb\xbf")), CRLF: bytes.Contains(data, []byte("\r\n"))}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if first, _, _ := bytes.Cut(data, []byte("\n")); bytes.Count(first, []byte(";")) > bytes.Count(first, []byte(",")) {
		g.Comma = ';'
	}
	r := csv.NewReader(bytes.NewReader(data))
	r.Comma, r.FieldsPerRecord, r.TrimLeadingSpace = g.Comma, -1, true
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s cannot be read as a table (%v). Fix the file in the rule set's directory (switchboard check names the place), then open the editor again", path, err)
	}
	if len(recs) == 0 {
		recs = [][]string{{"segment", "when", "group", "how", "greeting", "offline"}}
	}
	width := 0
	for _, rec := range recs {
		width = max(width, len(rec))
	}
	if width > maxCols || len(recs)-1 > maxRows || width*len(recs) > maxCells {
		return nil, fmt.Errorf("%s has %d rows and %d columns; the editor takes up to %d rows, %d columns and %d cells. Edit the file itself", path, len(recs)-1, width, maxRows, maxCols, maxCells)
	}
	for i, rec := range recs {
		for len(rec) < width {
			rec = append(rec, "")
		}
		if i == 0 {
			g.Header = rec
		} else {
			g.Rows = append(g.Rows, rec)
		}
	}
	return g, nil
}

// gridFromForm is the grid a page posted.
func (c *Console) gridFromForm(r *http.Request) (*grid, error) {
	f := r.PostForm
	rows, err1 := strconv.Atoi(f.Get("rows"))
	cols, err2 := strconv.Atoi(f.Get("cols"))
	if err1 != nil || err2 != nil || rows < 0 || rows > maxRows || cols < 1 || cols > maxCols || rows*cols > maxCells {
		return nil, fmt.Errorf("the table posted is not one the editor made (rows %q, columns %q; at most %d rows, %d columns and %d cells); open the table again", f.Get("rows"), f.Get("cols"), maxRows, maxCols, maxCells)
	}
	g := &grid{File: c.tablePath(), Comma: ',', Base: f.Get("base"), BOM: f.Get("bom") == "1", CRLF: f.Get("crlf") == "1"}
	if f.Get("comma") == ";" {
		g.Comma = ';'
	}
	cell := func(name string) (string, error) {
		v := strings.ReplaceAll(strings.ReplaceAll(f.Get(name), "\r\n", "\n"), "\r", "\n")
		if n := utf8.RuneCountInString(v); n > maxCellLen {
			return "", fmt.Errorf("a cell holds %d characters; keep each under %d", n, maxCellLen)
		}
		for _, r := range v {
			if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f {
				return "", fmt.Errorf("a cell holds a control character (%U), which a table cannot keep; remove it", r)
			}
		}
		return v, nil
	}
	for j := range cols {
		h, err := cell(fmt.Sprintf("h%d", j))
		if err != nil {
			return nil, err
		}
		g.Header = append(g.Header, h)
	}
	for i := range rows {
		row := make([]string, cols)
		for j := range cols {
			v, err := cell(fmt.Sprintf("r%dc%d", i, j))
			if err != nil {
				return nil, err
			}
			row[j] = v
		}
		g.Rows = append(g.Rows, row)
	}
	return g, nil
}

// blank says whether a row has nothing in it.
func blank(row []string) bool {
	for _, v := range row {
		if strings.TrimSpace(v) != "" {
			return false
		}
	}
	return true
}

// csv writes the grid as its file, as it was saved (separator, byte
// order mark, line ends). With tidy, blank rows are left out (a published
// file).
func (g *grid) csv(tidy bool) []byte {
	var b bytes.Buffer
	if g.BOM {
		b.WriteString("\xef\xbb\xbf")
	}
	w := csv.NewWriter(&b)
	w.Comma, w.UseCRLF = g.Comma, g.CRLF
	w.Write(g.Header)
	for _, row := range g.Rows {
		if tidy && blank(row) {
			continue
		}
		w.Write(row)
	}
	w.Flush()
	return b.Bytes()
}

// apply does what a row button asks: add, insert:I, del:I, up:I, down:I.
func (g *grid) apply(op string) error {
	verb, arg, _ := strings.Cut(op, ":")
	i, err := strconv.Atoi(arg)
	if arg != "" && (err != nil || i < 0 || i >= len(g.Rows)) {
		return fmt.Errorf("there is no row %q to %s; open the table again", arg, verb)
	}
	empty := make([]string, len(g.Header))
	switch {
	case verb == "add" && arg == "":
		if len(g.Rows) >= maxRows || (len(g.Rows)+2)*len(g.Header) > maxCells {
			return fmt.Errorf("the editor takes up to %d rows and %d cells; a larger table is edited in the file itself", maxRows, maxCells)
		}
		g.Rows = append(g.Rows, empty)
	case verb == "insert" && arg != "":
		if len(g.Rows) >= maxRows || (len(g.Rows)+2)*len(g.Header) > maxCells {
			return fmt.Errorf("the editor takes up to %d rows and %d cells; a larger table is edited in the file itself", maxRows, maxCells)
		}
		g.Rows = append(g.Rows[:i+1], append([][]string{empty}, g.Rows[i+1:]...)...)
	case verb == "del" && arg != "":
		g.Rows = append(g.Rows[:i], g.Rows[i+1:]...)
	case verb == "up" && arg != "":
		if i > 0 {
			g.Rows[i-1], g.Rows[i] = g.Rows[i], g.Rows[i-1]
		}
	case verb == "down" && arg != "":
		if i+1 < len(g.Rows) {
			g.Rows[i], g.Rows[i+1] = g.Rows[i+1], g.Rows[i]
		}
	default:
		return fmt.Errorf("%q is not something the editor does", op)
	}
	return nil
}

// note is one diagnostic as a cell shows it.
type note struct {
	Warning bool
	Text    string
}

// checked is what check says of an edited table: the notes on each cell,
// and those that belong to no cell (the header, other files).
type checked struct {
	Cells  map[string][]note // by cell id, r{i}c{j}
	Others []note
	Errors int
	Clean  bool // the rule set builds with this table
}

// check compiles the rule set on disk with the edited table in place of
// its own, as switchboard check would, and puts each diagnostic on its
// cell.
func (c *Console) check(g *grid) *checked {
	text := g.csv(false)
	src, ds := dsl.ReadDir(c.cfg.Rules, c.cfg.Options)
	src.Mappings = &dsl.Source{Name: g.File, Text: text}
	out := &checked{Cells: map[string][]note{}}
	rs, more := dsl.Build(src)
	ds = append(ds, more...)
	fields := fieldPositions(text, g.Comma)
	for _, d := range ds {
		n := note{Warning: d.Severity == dsl.Warning, Text: d.Message}
		if d.Hint != "" {
			n.Text += " — " + d.Hint
		}
		if !n.Warning {
			out.Errors++
		}
		if rec, field, ok := cellAt(fields, d.Pos); ok && d.Pos.File == g.File && rec >= 1 && rec-1 < len(g.Rows) {
			id := fmt.Sprintf("r%dc%d", rec-1, field)
			out.Cells[id] = append(out.Cells[id], n)
			continue
		}
		n.Text = d.String()
		out.Others = append(out.Others, n)
	}
	out.Clean = rs != nil && out.Errors == 0
	return out
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// fieldPositions gives where each field of each record of a CSV text
// starts, as check counts lines and columns (a record may span lines).
func fieldPositions(text []byte, comma rune) [][]dsl.Pos {
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(text, []byte("\xef\xbb\xbf"))))
	r.Comma, r.FieldsPerRecord, r.TrimLeadingSpace = comma, -1, true
	var out [][]dsl.Pos
	for {
		rec, err := r.Read()
		if err != nil {
			return out
		}
		ps := make([]dsl.Pos, len(rec))
		for i := range rec {
			ps[i].Line, ps[i].Col = r.FieldPos(i)
		}
		out = append(out, ps)
	}
}

// cellAt is the record and field a position falls in: the last field
// that starts at or before it.
func cellAt(fields [][]dsl.Pos, p dsl.Pos) (rec, field int, ok bool) {
	before := func(a, b dsl.Pos) bool { return a.Line < b.Line || a.Line == b.Line && a.Col <= b.Col }
	for i, ps := range fields {
		for j, fp := range ps {
			if before(fp, p) {
				rec, field, ok = i, j, true
			}
		}
	}
	return rec, field, ok
}

// tableView is what the table page shows.
type tableView struct {
	Grid    *grid
	Check   *checked
	Preview *preview
	// Done says what was published; Problem what went wrong.
	Done, Problem string
	ReadOnly      string // why the table cannot be edited here
	By, Reason    string // the publish form, as last filled
	Reopen        bool   // the file changed on disk: offer to open it again
}

// Cells are the grid's rows for the template.
func (t *tableView) Cells() [][]cellView {
	var out [][]cellView
	n := 2
	for i, row := range t.Grid.Rows {
		var cells []cellView
		// Rows are numbered as in the file and in check's messages:
		// the header is row 1, blank rows count.
		label := strconv.Itoa(n + i)
		for j, v := range row {
			id := fmt.Sprintf("r%dc%d", i, j)
			col := t.Grid.Header[j]
			k := strings.ToLower(strings.TrimSpace(col))
			cv := cellView{ID: id, Value: v, Row: i, Label: label, Column: col, Wide: k == "when" || k == "greeting" || k == "segment", Lines: strings.Contains(v, "\n")}
			if t.Check != nil {
				cv.Notes = t.Check.Cells[id]
			}
			cells = append(cells, cv)
		}
		out = append(out, cells)
	}
	return out
}

// cellView is one cell of the grid.
type cellView struct {
	ID, Value, Label, Column string
	Row                      int
	Wide                     bool // a column of sentences
	Lines                    bool // a value over several lines: a text area
	Notes                    []note
}

// table opens the editor on the file as it is on disk.
func (c *Console) table(w http.ResponseWriter, r *http.Request, v *view) {
	v.Title = "Mapping table"
	tv := &tableView{By: v.User}
	if c.cfg.Rules == "" {
		tv.ReadOnly = "This console was started without the rule set's directory, so it cannot show the table."
		v.Data = tv
		c.render(w, r, http.StatusOK, "table", v)
		return
	}
	g, _, err := c.readGrid()
	if err != nil {
		tv.ReadOnly = err.Error()
		v.Data = tv
		c.render(w, r, http.StatusOK, "table", v)
		return
	}
	tv.Grid, tv.Check = g, c.check(g)
	if c.cfg.Publish == nil {
		tv.ReadOnly = "This service cannot reload its rules, so the table can be checked and previewed here but not published."
	}
	if p := r.URL.Query().Get("published"); isVersion(p) {
		tv.Done = "Published: the service now routes with this table (rule set " + p + "). The rules page lists the change."
	}
	v.Data = tv
	c.render(w, r, http.StatusOK, "table", v)
}

// tableEdit takes the posted table and does what the button pressed
// asks: a row change, check, preview or publish.
func (c *Console) tableEdit(w http.ResponseWriter, r *http.Request, v *view) {
	v.Title = "Mapping table"
	if c.cfg.Rules == "" {
		c.fail(w, r, http.StatusNotFound, "This console was started without the rule set's directory.")
		return
	}
	g, err := c.gridFromForm(r)
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	tv := &tableView{Grid: g, By: cleanName(r.PostFormValue("by")), Reason: strings.TrimSpace(r.PostFormValue("reason"))}
	if tv.By == "" {
		tv.By = v.User
	}
	v.Data = tv
	code := http.StatusOK
	switch op := r.PostFormValue("op"); op {
	case "check", "":
	case "preview":
		// A week's replay may outlast the server's write timeout.
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(15 * time.Minute))
		tv.Check = c.check(g)
		tv.Preview, err = c.preview(r.Context(), g)
		if err != nil {
			tv.Problem, code = err.Error(), http.StatusConflict
		}
		c.render(w, r, code, "table", v)
		return
	case "publish":
		if c.cfg.Publish == nil {
			c.fail(w, r, http.StatusForbidden, "This service cannot reload its rules, so the table cannot be published here.")
			return
		}
		tv.Check = c.check(g)
		version, err := c.publish(r.Context(), g, tv, v)
		if err == nil {
			http.Redirect(w, r, "/table?published="+version, http.StatusSeeOther)
			return
		}
		tv.Problem, code = err.Error(), http.StatusConflict
		if errors.Is(err, errChanged) {
			tv.Reopen = true
		}
		c.render(w, r, code, "table", v)
		return
	default:
		if err := g.apply(op); err != nil {
			tv.Problem, code = err.Error(), http.StatusBadRequest
		}
	}
	tv.Check = c.check(g)
	c.render(w, r, code, "table", v)
}

// tableCheck answers htmx as cells are typed: each cell's notes, swapped
// in place, so that the cell being typed in keeps its focus.
func (c *Console) tableCheck(w http.ResponseWriter, r *http.Request, v *view) {
	if c.cfg.Rules == "" {
		c.fail(w, r, http.StatusNotFound, "This console was started without the rule set's directory.")
		return
	}
	g, err := c.gridFromForm(r)
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	// Checks come as people type: a few at a time, beside the routing.
	select {
	case c.checks <- struct{}{}:
		defer func() { <-c.checks }()
	case <-r.Context().Done():
		return
	}
	tv := &tableView{Grid: g, Check: c.check(g)}
	v.Data = tv
	c.renderPart(w, "table", "notes", v)
}

// preview replays the last week under the running rules with the edited
// table, beside the log as it was decided.
func (c *Console) preview(ctx context.Context, g *grid) (*preview, error) {
	if c.cfg.Store == nil || c.cfg.Journal == nil {
		return nil, errors.New("this console has no log to preview on")
	}
	select {
	case c.previews <- struct{}{}:
		defer func() { <-c.previews }()
	default:
		return nil, errors.New("another preview is running (a replay of a week takes a while, and one runs at a time so that the desk keeps routing); try again when it is done")
	}
	now := c.cfg.Now()
	running, err := whatif.Current(ctx, c.cfg.Store, c.cfg.Journal, now)
	if errors.Is(err, whatif.ErrEmptyWindow) {
		return nil, fmt.Errorf("there is no traffic in the last %d days to preview on", previewDays)
	}
	if err != nil {
		return nil, fmt.Errorf("the log could not be read: %v", err)
	}
	cand, ds := whatif.WithTable(running, dsl.Source{Name: g.File, Text: g.csv(false)})
	if cand == nil {
		return nil, fmt.Errorf("not previewed: the running rules do not build with this table (%s; the first: %s). Fix the cells marked below", plural(len(ds), "problem"), first(ds))
	}
	rep, err := whatif.Run(ctx, c.cfg.Store, c.cfg.Journal, whatif.Options{From: now.Add(-previewDays * 24 * time.Hour), To: now, Candidate: cand, Source: "the edited table"})
	if errors.Is(err, whatif.ErrEmptyWindow) {
		return nil, fmt.Errorf("there is no traffic in the last %d days to preview on", previewDays)
	}
	if err != nil {
		return nil, fmt.Errorf("the preview failed: %v", err)
	}
	return newPreview(rep), nil
}

func first(ds dsl.Diagnostics) string {
	for _, d := range ds {
		if d.Severity == dsl.Error {
			return d.String()
		}
	}
	return ""
}

// preview is a what-if report as the table page shows it.
type preview struct {
	Report *whatif.Report
	Rows   []previewRow
	Other  []previewRow // rules that are not table rows, when they change
	Moved  []whatif.Move
	More   int // moved conversations not listed
}

type previewRow struct {
	Name          string // the segment, or the rule
	Row           string // mappings.csv:N, or the rule's place
	Before, After int
	Changed       bool
}

// maxMoved is how many moved conversations the page lists.
const maxMoved = 200

func newPreview(rep *whatif.Report) *preview {
	p := &preview{Report: rep, Moved: rep.Moved}
	if len(p.Moved) > maxMoved {
		p.More, p.Moved = len(p.Moved)-maxMoved, p.Moved[:maxMoved]
	}
	for _, m := range rep.Matches {
		row := previewRow{Name: m.Rule, Before: m.Before, After: m.After, Changed: m.Before != m.After}
		// Table rows are named mappings.csv:N (segment).
		if at, seg, ok := strings.Cut(m.Rule, " ("); ok && strings.HasPrefix(at, dsl.MappingsCSV+":") {
			row.Row, row.Name = at, strings.TrimSuffix(seg, ")")
			p.Rows = append(p.Rows, row)
		} else if row.Changed {
			p.Other = append(p.Other, row)
		}
	}
	return p
}

// errChanged: the file is not the one the editor opened.
var errChanged = errors.New("mappings.csv changed on disk since you opened the editor (someone else published, or it was edited on the server). Your edits are still below, not saved. Open the table again to see the file as it is now, then make your change there")

// maxReason is the longest note about a change the history keeps, in
// bytes (the service's limit).
const maxReason = 500

// publish writes the edited table in place of the file and reloads, and
// returns the new rule set version. The log's reload record says who, why,
// and which rows changed. Every error says "not published" or why nothing
// was to be published.
func (c *Console) publish(ctx context.Context, g *grid, tv *tableView, v *view) (string, error) {
	version, err := c.publishTable(ctx, g, tv, v)
	if err != nil && !strings.HasPrefix(err.Error(), "nothing to publish") {
		return "", fmt.Errorf("not published: %w", err)
	}
	return version, err
}

func (c *Console) publishTable(ctx context.Context, g *grid, tv *tableView, v *view) (string, error) {
	switch {
	case tv.By == "":
		return "", errors.New("say who you are (your name, above Publish): the rules history records who published each change")
	case len(tv.Reason) > maxReason:
		return "", fmt.Errorf("the note about the change is %d bytes long; keep it under %d (about %d letters)", len(tv.Reason), maxReason, maxReason/2)
	case !tv.Check.Clean:
		return "", fmt.Errorf("the table has %s; fix the cells marked below", plural(tv.Check.Errors, "problem"))
	}
	// A publish makes the directory live as it is: it must be the
	// running rules, but for the table.
	if err := c.onlyTableChanges(ctx); err != nil {
		return "", err
	}
	c.remember(v.session, tv.By)
	text := g.csv(true)
	// A link (to a git checkout, a mounted configuration) stays a link:
	// the file it names is replaced.
	path := g.File
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target
	}
	// The change is described against the file the editor opened; write
	// makes sure that is still the file.
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s cannot be read: %v", g.File, err)
	}
	if hashOf(old) != g.Base {
		return "", errChanged
	}
	change, err := tableDiff(old, text, g.Comma)
	if err != nil {
		return "", err
	}
	write := func() (func() error, error) {
		cur, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s cannot be read: %v", g.File, err)
		}
		if hashOf(cur) != g.Base {
			return nil, errChanged
		}
		if bytes.Equal(cur, text) {
			return nil, errors.New("nothing to publish: the table is the same as the file")
		}
		mode := fs.FileMode(0o644)
		if info, err := os.Stat(path); err == nil {
			mode = info.Mode().Perm()
		}
		// Until the reload is recorded, a note in the directory says how
		// to put the file back, should the service stop in between
		// (Unfinished).
		if err := markPublish(c.cfg.Rules, underWay{File: path, Existed: cur != nil, Old: cur, Mode: uint32(mode), New: hashOf(text),
			By: tv.By, Reason: tv.Reason, At: c.cfg.Now().UTC()}); err != nil {
			return nil, fmt.Errorf("%s could not be written: %v", filepath.Join(c.cfg.Rules, publishNote), err)
		}
		if err := atomicfile.Write(path, text, mode); err != nil {
			unmarkPublish(c.cfg.Rules)
			return nil, fmt.Errorf("%s could not be written: %v", g.File, err)
		}
		return func() error {
			if cur == nil {
				return os.Remove(path)
			}
			return atomicfile.Write(path, cur, mode)
		}, nil
	}
	// The rules the service loads must hold the table written, not one
	// that another process wrote in between.
	verify := func(rs *dsl.RuleSet) error {
		if m := rs.Sources.Mappings; m == nil || !bytes.Equal(m.Text, text) {
			return errChanged
		}
		return nil
	}
	res, err := c.cfg.Publish(ctx, service.ReloadNote{By: tv.By, Reason: tv.Reason, Change: change}, write, verify)
	// Settled: recorded, or put back. The note stays only while the file
	// holds a table that was not published (it could not be put back): the
	// next start puts it back.
	if now, _ := os.ReadFile(path); (err == nil && res.Changed) || !bytes.Equal(now, text) {
		if uerr := unmarkPublish(c.cfg.Rules); uerr != nil {
			c.cfg.Log.Error("console: the note of a settled publish cannot be removed", "err", uerr)
		}
	}
	switch {
	case errors.Is(err, service.ErrReloadRefused):
		var msgs []string
		for _, d := range res.Diagnostics {
			if d.Severity == dsl.Error {
				msgs = append(msgs, d.String())
			}
		}
		return "", fmt.Errorf("the service refused the rule set, so the file was put back as it was: %s", strings.Join(msgs, "; "))
	case err != nil:
		return "", err
	case !res.Changed:
		return "", errors.New("nothing to publish: the service already runs the rules with exactly this table")
	}
	c.cfg.Log.Info("console: table published", "by", tv.By, "version", res.Version, "record", res.Seq)
	return res.Version, nil
}

// onlyTableChanges makes sure the rule set's directory is the running
// rules but for the table: a publish must not make live, and put under
// the publisher's name, changes made on disk to the other files and not
// yet reloaded.
func (c *Console) onlyTableChanges(ctx context.Context) error {
	var running struct {
		Files []ruleFile `json:"files"`
	}
	if _, err := c.api(ctx, "GET", "/v1/rules", nil, &running); err != nil {
		return fmt.Errorf("the running rules could not be read: %v", err)
	}
	var changed []string
	onDisk := map[string]bool{}
	paths, _ := dsl.RuleFiles(c.cfg.Rules)
	paths = append(paths, filepath.Join(c.cfg.Rules, dsl.TeamFile))
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			onDisk[filepath.Base(p)] = true
			if !slices.ContainsFunc(running.Files, func(f ruleFile) bool { return f.Name == filepath.Base(p) && f.Text == string(b) }) {
				changed = append(changed, filepath.Base(p))
			}
		}
	}
	for _, f := range running.Files {
		if f.Name != dsl.MappingsCSV && f.Name != dsl.MappingsYAML && !onDisk[f.Name] {
			changed = append(changed, f.Name+" (removed)")
		}
	}
	if len(changed) > 0 {
		return fmt.Errorf("%s on disk %s changes the service does not run yet. Publishing would make them live too, under your name. Ask whoever changed %s to reload the rules (or undo the change), then publish", strings.Join(changed, ", "), map[bool]string{true: "has", false: "have"}[len(changed) == 1], map[bool]string{true: "it", false: "them"}[len(changed) == 1])
	}
	return nil
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// tableChange is a published table's row diff, kept in the log with the
// reload: which rows were added, removed, changed (cell by cell) and
// moved, rows known by their segment name.
type tableChange struct {
	File    string    `json:"file"`
	Added   []rowRef  `json:"added,omitempty"`
	Removed []rowRef  `json:"removed,omitempty"`
	Changed []rowEdit `json:"changed,omitempty"`
	Moved   []rowMove `json:"moved,omitempty"`
	// More counts the rows left out of the lists above (a whole table
	// rewritten).
	More int `json:"more,omitempty"`
}

type rowRef struct {
	Row     int    `json:"row"`
	Segment string `json:"segment"`
}

type rowEdit struct {
	Row     int        `json:"row"`
	Segment string     `json:"segment"`
	Cells   []cellEdit `json:"cells"`
}

type cellEdit struct {
	Column string `json:"column"`
	Before string `json:"before"`
	After  string `json:"after"`
}

type rowMove struct {
	Segment string `json:"segment"`
	From    int    `json:"from"`
	To      int    `json:"to"`
}

// maxListed is how many rows each list of a change names.
const maxListed = 100

// tableDiff compares two versions of a table, row by row.
func tableDiff(before, after []byte, comma rune) (json.RawMessage, error) {
	type row struct {
		n     int
		key   string
		seg   string
		cells []string
	}
	rows := func(data []byte) ([]string, []row, error) {
		if data == nil {
			return nil, nil, nil
		}
		g, err := parseGrid(dsl.MappingsCSV, data)
		if err != nil {
			return nil, nil, err
		}
		seg := 0
		for j, h := range g.Header {
			if k := strings.ToLower(strings.TrimSpace(h)); k == "segment" || k == "name" || k == "customers" || k == "customer" {
				seg = j
				break
			}
		}
		var out []row
		n := 1
		for _, cells := range g.Rows {
			n++
			if blank(cells) {
				continue
			}
			s := strings.TrimSpace(cells[seg])
			out = append(out, row{n: n, key: strings.ToLower(s), seg: s, cells: cells})
		}
		return g.Header, out, nil
	}
	_, old, err := rows(before)
	if err != nil {
		return nil, err
	}
	header, cur, err := rows(after)
	if err != nil {
		return nil, err
	}
	ch := tableChange{File: dsl.MappingsCSV}
	oldAt := map[string]int{}
	for i, r := range old {
		oldAt[r.key] = i
	}
	curAt := map[string]bool{}
	var common []int // the old index of each kept row, in the new order
	var kept []row
	listed := func(n int) bool {
		if n >= maxListed {
			ch.More++
			return false
		}
		return true
	}
	for _, r := range cur {
		curAt[r.key] = true
		i, ok := oldAt[r.key]
		if !ok {
			if listed(len(ch.Added)) {
				ch.Added = append(ch.Added, rowRef{Row: r.n, Segment: r.seg})
			}
			continue
		}
		common = append(common, i)
		kept = append(kept, r)
		var edits []cellEdit
		for j, v := range r.cells {
			was := ""
			if j < len(old[i].cells) {
				was = old[i].cells[j]
			}
			if was != v {
				edits = append(edits, cellEdit{Column: header[j], Before: clip(was, 200), After: clip(v, 200)})
			}
		}
		if len(edits) > 0 && listed(len(ch.Changed)) {
			ch.Changed = append(ch.Changed, rowEdit{Row: r.n, Segment: r.seg, Cells: edits})
		}
	}
	for _, r := range old {
		if !curAt[r.key] && listed(len(ch.Removed)) {
			ch.Removed = append(ch.Removed, rowRef{Row: r.n, Segment: r.seg})
		}
	}
	// Moved: the kept rows outside the longest run that kept its order;
	// a row inserted above others does not move them.
	stay := longestIncreasing(common)
	for k, r := range kept {
		if !stay[k] && listed(len(ch.Moved)) {
			ch.Moved = append(ch.Moved, rowMove{Segment: r.seg, From: old[common[k]].n, To: r.n})
		}
	}
	return json.Marshal(ch)
}

// longestIncreasing marks the members of a longest increasing subsequence.
func longestIncreasing(a []int) []bool {
	// Patience sorting: tails[k] is the index in a of the smallest tail of
	// an increasing run of length k+1.
	var tails []int
	prev := make([]int, len(a))
	for i, v := range a {
		lo, hi := 0, len(tails)
		for lo < hi {
			m := (lo + hi) / 2
			if a[tails[m]] < v {
				lo = m + 1
			} else {
				hi = m
			}
		}
		prev[i] = -1
		if lo > 0 {
			prev[i] = tails[lo-1]
		}
		if lo == len(tails) {
			tails = append(tails, i)
		} else {
			tails[lo] = i
		}
	}
	in := make([]bool, len(a))
	if len(tails) > 0 {
		for i := tails[len(tails)-1]; i >= 0; i = prev[i] {
			in[i] = true
		}
	}
	return in
}

// describeChange says what a table change did, in a line per row.
func describeChange(raw json.RawMessage) []string {
	var ch tableChange
	if json.Unmarshal(raw, &ch) != nil || ch.File == "" {
		return nil
	}
	var out []string
	for _, r := range ch.Added {
		out = append(out, fmt.Sprintf("added row %d (%s)", r.Row, r.Segment))
	}
	for _, r := range ch.Removed {
		out = append(out, fmt.Sprintf("removed row %d (%s)", r.Row, r.Segment))
	}
	for _, r := range ch.Changed {
		var cells []string
		for _, c := range r.Cells {
			cells = append(cells, fmt.Sprintf("%s %s → %s", c.Column, quoteCell(c.Before), quoteCell(c.After)))
		}
		out = append(out, fmt.Sprintf("row %d (%s): %s", r.Row, r.Segment, strings.Join(cells, "; ")))
	}
	for _, r := range ch.Moved {
		out = append(out, fmt.Sprintf("moved %s from row %d to row %d", r.Segment, r.From, r.To))
	}
	if ch.More > 0 {
		out = append(out, fmt.Sprintf("and %d more rows", ch.More))
	}
	return out
}

func quoteCell(s string) string {
	if s == "" {
		return "(empty)"
	}
	return strconv.Quote(s)
}
