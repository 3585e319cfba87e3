// Package actions holds the machinery behind Switchboard's built-in
// actions: the agent pool with its routing algorithms (round robin, random,
// longest idle, least active, most available) over skills and capacity,
// and the waiting lines that hold work no agent can take yet.
//
// Every algorithm is an O(log n) query on an index (a segment tree over a
// group's members), never a scan, so choosing among 10,000 members costs
// about as much as choosing among ten.
package actions
