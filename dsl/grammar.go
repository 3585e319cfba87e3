package dsl

import (
	"github.com/alecthomas/participle/v2"
	"github.com/alecthomas/participle/v2/lexer"
)

// The lexer is a table. "#" starts a comment everywhere except inside a
// condition's { } predicate, where expr uses it for the current element.
var lex = lexer.MustStateful(lexer.Rules{
	"Root": {
		{Name: "Comment", Pattern: `#[^\n]*`},
		lexer.Include("Common"),
	},
	"Brace": {
		{Name: "RBrace", Pattern: `\}`, Action: lexer.Pop()},
		{Name: "Hash", Pattern: `#`},
		lexer.Include("Common"),
	},
	"Common": {
		{Name: "NL", Pattern: `\n`},
		{Name: "WS", Pattern: `[ \t\r\f\v]+`},
		{Name: "String", Pattern: `"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'`},
		{Name: "RawString", Pattern: "`[^`]*`"},
		{Name: "BadString", Pattern: `["'][^\n]*`},
		{Name: "Arrow", Pattern: `->|→`},
		{Name: "Duration", Pattern: `\d+(?:\.\d+)?(?:ms|s|m|h|d)(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))*\b`},
		{Name: "Number", Pattern: `\d+(?:\.\d+)?(?:[eE][+-]?\d+)?`},
		{Name: "Ident", Pattern: `[\p{L}_][\p{L}\p{N}_]*(?:\.[\p{L}_][\p{L}\p{N}_]*)*`},
		{Name: "LBrace", Pattern: `\{`, Action: lexer.Push("Brace")},
		{Name: "Punct", Pattern: `==|!=|<=|>=|&&|\|\||\?\?|\?\.|\.\.|[^\s\p{L}\p{N}_]`},
	},
})

var (
	tokNL      = lex.Symbols()["NL"]
	tokWS      = lex.Symbols()["WS"]
	tokComment = lex.Symbols()["Comment"]
	tokIdent   = lex.Symbols()["Ident"]
	tokString  = lex.Symbols()["String"]
	tokBad     = lex.Symbols()["BadString"]
	tokNumber  = lex.Symbols()["Number"]
)

// The grammar is the AST: one struct per production. Each item (a rule or a
// segment) is parsed on its own, so one mistake does not hide the others.

type itemAST struct {
	Segment *segmentAST `parser:"NL* ( @@"`
	Rule    *ruleAST    `parser:"    | @@ ) NL*"`
}

type segmentAST struct {
	Pos  lexer.Position
	Name *nameAST `parser:"'segment' @@ NL*"`
	Cond *exprAST `parser:"'where' @@"`
}

type ruleAST struct {
	Pos     lexer.Position
	EndPos  lexer.Position
	Name    *nameAST     `parser:"( 'rule' @@ NL* )?"`
	On      onAST        `parser:"@@ NL*"`
	Cond    *exprAST     `parser:"( 'where' @@ )?"`
	Arrow   arrowAST     `parser:"@@ NL*"`
	Actions []*actionAST `parser:"@@ ( ( ';' | NL )+ @@? )*"`
}

type onAST struct {
	Pos     lexer.Position
	Trigger []string   `parser:"'on' ( (?! 'where' | 'then' | 'assign' | 'reassign' | 'unassign' | 'reply' | 'notify' | 'tag' | 'untag' | 'set' | 'cancel' | 'release' | 'close' | 'stop') @Ident )+"`
	After   *tokenAST  `parser:"@@?"`
	Extra   []tokenAST `parser:"@@*"`
}

// tokenAST captures one token with its position, for durations and stray
// words that the checker reports in plain terms.
type tokenAST struct {
	Pos   lexer.Position
	Value string `parser:"@(Duration | Number | Punct | String)"`
}

type arrowAST struct {
	Pos   lexer.Position
	Value string `parser:"@(Arrow | 'then')"`
}

type nameAST struct {
	Pos    lexer.Position
	Tokens []lexer.Token
	Ident  string `parser:"  (?! 'else' | 'by' | 'skills' | 'skill' | 'cost' | 'priority' | 'even' | 'including' | 'limit' | 'offer' | 'via' | 'with' | 'then' | 'on' | 'where') @Ident"`
	Quoted string `parser:"| @String"`
}

// exprAST is an expr-lang fragment; its text is sliced from the source by
// the positions of its tokens, so it compiles exactly as written.
type exprAST struct {
	Tokens []lexer.Token
	Parts  []string `parser:"@~( Arrow | 'then' )+"`
}

// setExprAST is the right-hand side of set: up to the end of the action.
type setExprAST struct {
	Tokens []lexer.Token
	Parts  []string `parser:"@~( ';' | NL )+"`
}

type actionAST struct {
	Pos    lexer.Position
	EndPos lexer.Position
	Assign *assignAST `parser:"(   @@"`
	Reply  *replyAST  `parser:"  | @@"`
	Notify *notifyAST `parser:"  | @@"`
	Tag    *tagAST    `parser:"  | @@"`
	Set    *setAST    `parser:"  | @@"`
	Word   *kwAST     `parser:"  | @@"`
	Untag  *untagAST  `parser:"  | @@"`
	Bad    *badAST    `parser:"  | @@ )"`
	Else   *elseAST   `parser:"@@?"`
}

type elseAST struct {
	Pos    lexer.Position
	Action *actionAST `parser:"'else' @@"`
}

// kwAST is an action of one word: stop, unassign, cancel, release or close.
type kwAST struct {
	Pos lexer.Position
	Kw  string `parser:"@( 'stop' | 'unassign' | 'cancel' | 'release' | 'close' )"`
}

type untagAST struct {
	Pos  lexer.Position
	Name *nameAST `parser:"'untag' @@"`
}

// badAST catches a line that is not an action, so the checker can say which
// actions exist instead of a bare syntax error.
type badAST struct {
	Pos  lexer.Position
	Word string   `parser:"(?! 'rule' | 'on' | 'segment' | 'else') @Ident"`
	Rest []string `parser:"@~( ';' | NL )*"`
}

type assignAST struct {
	Pos    lexer.Position
	Verb   string      `parser:"@( 'assign' | 'reassign' )"`
	Kind   *tokenIdent `parser:"@@?"`
	Name   *nameAST    `parser:"@@?"`
	Mods   []*modAST   `parser:"@@*"`
	EndPos lexer.Position
}

type tokenIdent struct {
	Pos   lexer.Position
	Value string `parser:"@Ident"`
}

type modAST struct {
	Pos      lexer.Position
	By       *algoAST   `parser:"  'by' @@"`
	Skills   *skillsAST `parser:"| @@"`
	Cost     *costAST   `parser:"| 'cost' @@"`
	Priority *numberAST `parser:"| 'priority' @@"`
	Offline  bool       `parser:"| @( 'even' 'if' 'offline' )"`
	Away     bool       `parser:"| @( 'including' 'away' )"`
	Limit    *limitAST  `parser:"| 'limit' @@"`
	Offer    *offerAST  `parser:"| 'offer' @@"`
}

// limitAST is a fairness limit: limit 10 per 1h.
type limitAST struct {
	Pos   lexer.Position
	Count *tokenAST `parser:"@@?"`
	Per   *tokenAST `parser:"( 'per' @@ )?"`
}

// offerAST is an offer's time to answer: offer 30s.
type offerAST struct {
	Pos   lexer.Position
	After *tokenAST `parser:"@@?"`
}

type algoAST struct {
	Pos   lexer.Position
	Value string `parser:"@Ident"`
}

type skillsAST struct {
	Pos   lexer.Position
	Names []*nameAST `parser:"( 'skills' | 'skill' ) ( '[' ( @@ ( ',' @@ )* )? ']' | @@ )"`
}

type costAST struct {
	Pos     lexer.Position
	Value   string `parser:"@Number"`
	Percent bool   `parser:"@'%'?"`
}

type numberAST struct {
	Pos   lexer.Position
	Value string `parser:"@Number"`
}

type replyAST struct {
	Pos  lexer.Position
	Text stringAST `parser:"'reply' @@"`
}

type stringAST struct {
	Pos   lexer.Position
	Value string `parser:"@String"`
}

type notifyAST struct {
	Pos      lexer.Position
	User     *nameAST    `parser:"'notify' ( 'user' @@"`
	Group    *nameAST    `parser:"  | 'group' @@"`
	Endpoint *nameAST    `parser:"  | 'webhook' @@"`
	Address  *stringAST  `parser:"  | 'email' @@"`
	Who      *tokenIdent `parser:"  | @@ )"`
	Via      bool        `parser:"@'via'?"`
	Channel  *tokenIdent `parser:"( (?! 'with') @@ )?"`
	With     *stringAST  `parser:"( 'with' @@ )?"`
}

type tagAST struct {
	Pos  lexer.Position
	Name *nameAST `parser:"'tag' @@"`
}

type setAST struct {
	Pos   lexer.Position
	Path  tokenIdent  `parser:"'set' @@ '='"`
	Value *setExprAST `parser:"@@"`
}

var itemParser = participle.MustBuild[itemAST](
	participle.Lexer(lex),
	participle.Elide("WS", "Comment"),
	participle.UseLookahead(4),
)
