package main

import (
	"math/rand/v2"
	"strings"
)

// taskWords are words people put in task titles; they head the vocabulary,
// so they are also the most frequent ones.
var taskWords = strings.Fields(`
call email review write fix update plan book buy pay send check prepare schedule clean order read finish
start meet draft submit renew cancel confirm organise move pick return test deploy merge refactor document
report invoice budget meeting dentist doctor groceries milk bread eggs coffee laundry dishes garden car tyres
insurance taxes rent bills mortgage passport visa flight hotel train tickets birthday present party dinner
lunch breakfast gym run swim yoga walk dog cat vet school homework teacher parents kids weekend holiday trip
project client team manager colleague interview contract proposal presentation slides notes agenda minutes
quarterly monthly weekly daily annual review release version feature bug issue ticket server database backup
migration security password account login website blog newsletter campaign sales marketing customer support
feedback survey analytics dashboard metrics goals roadmap sprint standup retro demo training workshop course
book chapter article paper thesis research experiment data model chart table spreadsheet figures numbers
office desk printer laptop phone charger cable keyboard monitor screen headphones battery repair replace
install configure upgrade license subscription payment refund receipt expense travel conference visit
friends family mother father sister brother grandma uncle aunt neighbour landlord plumber electrician
kitchen bathroom bedroom garage roof window door heating boiler fridge oven washing machine vacuum paint
shelves furniture sofa curtains plants flowers seeds tomatoes compost recycling bins post parcel delivery
bank loan savings pension shares statement tax return accountant lawyer appointment prescription pharmacy
vitamins allergy checkup blood test eye optician glasses haircut shoes jacket coat gift card wrapping
wedding anniversary christmas easter summer autumn winter spring morning evening tonight tomorrow friday
monday tuesday wednesday thursday saturday sunday urgent later soon first second final new old quick
`)

// tags are the labels tasks carry, a few per task at most.
var tags = strings.Fields(`work home errands health finance family shopping travel reading learning garden car
admin urgent someday waiting calls email q1 q2 q3 q4 personal side-project house kids`)

// vocabulary is taskWords followed by made-up words of two or three
// syllables, n words in all, without duplicates. The made-up tail gives the
// long run of rare words that real text has.
func vocabulary(n int, rng *rand.Rand) []string {
	onsets := strings.Fields("b c d f g h j k l m n p r s t v w z br cr dr fr gr pr tr bl cl fl gl pl sl st sp sk sh ch th")
	nuclei := strings.Fields("a e i o u ai ea ee oo ou ie")
	codas := []string{"", "", "", "n", "r", "l", "s", "t", "m", "nd", "st", "rk", "ng"}
	seen := make(map[string]bool, n)
	words := make([]string, 0, n)
	for _, w := range taskWords {
		if !seen[w] {
			seen[w] = true
			words = append(words, w)
		}
	}
	for len(words) < n {
		var b strings.Builder
		for range 2 + rng.IntN(2) {
			b.WriteString(onsets[rng.IntN(len(onsets))])
			b.WriteString(nuclei[rng.IntN(len(nuclei))])
			b.WriteString(codas[rng.IntN(len(codas))])
		}
		if w := b.String(); !seen[w] {
			seen[w] = true
			words = append(words, w)
		}
	}
	return words
}
