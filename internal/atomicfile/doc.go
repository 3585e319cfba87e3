// Package atomicfile replaces files whole: a reader, or a machine that
// crashes, sees the old file or the new one, never part of one; and a
// file that is a link stays a link, the file it names being replaced.
// The console's table editor and switchboard fmt -w write rule files so.
package atomicfile
