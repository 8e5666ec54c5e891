//! The owner table's unit tests.

use super::*;

#[test]
fn a_word_is_mixed_only_while_it_needs_a_leaf() {
    let t = OwnerTable::new(1 << 12);
    // Sets 1 to 4, lent tags 1 to 4 (`s[0]` is not used).
    let s: Vec<Owner> = std::iter::once(Owner { id: 0, tag: NO_TAG })
        .chain((1..5).map(|id| t.owner_for(id)))
        .collect();
    assert_eq!((s[1].tag, s[4].tag), (1, 4));
    assert_eq!(t.alloc(s[1], 1, 100, 0), Some((1, true)));
    assert_eq!(t.mixed_words(), 0);
    // Another set in the same word: mixed, both owners reported.
    assert_eq!(t.alloc(s[2], 1, 100, 0), Some((2, true)));
    assert_eq!(t.mixed_words(), 1);
    assert_eq!(t.get(1), (SlotState::Owned(1), 0));
    assert_eq!(t.get(2), (SlotState::Owned(2), 0));
    assert_eq!(t.get(3), (SlotState::Free, 0));
    // Set 2 leaves: the word stays mixed until set 1's own next call in it finds it all
    // set 1's, which gives it back its single owner and drops the leaf.
    assert_eq!(t.free_owned(1, s[2]), None, "set 1's, in a mixed word");
    assert_eq!(t.free_owned(3, s[2]), None, "free, in a mixed word");
    assert!(
        !t.free(0, 1 << 2, s[2]),
        "set 2 has nothing left in the word"
    );
    assert_eq!((t.get(2), t.mixed_words()), ((SlotState::Free, 0), 1));
    assert_eq!((t.owned_in(0, s[1]), t.owned_in(0, s[2])), (0b10, 0));
    assert!(
        t.is_owner(1, s[1]) && !t.is_owner(1, s[2]) && !t.is_owner(2, s[1]) && !t.is_owner(2, s[2])
    );
    assert_eq!(t.alloc(s[1], 1, 100, 0), Some((2, true)), "in a mixed word");
    assert_eq!(t.mixed_words(), 0);
    assert_eq!(tag_of(t.taken.word(0)), 1);
    assert_eq!(
        t.alloc(s[1], 1, 100, 0),
        Some((3, false)),
        "in set 1's word"
    );
    assert_eq!(t.free_owned(3, s[1]), Some(true));
    assert!(t.is_owner(2, s[1]) && !t.is_owner(3, s[1]) && !t.is_owner(2, s[2]));
    assert_eq!(t.free_owned(3, s[1]), None, "free in set 1's word");
    assert_eq!(t.free_owned(2, s[2]), None, "set 1's");
    assert_eq!(t.free_owned(2, s[1]), Some(true), "set 1 keeps PASID 1");
    assert_eq!(t.free_owned(2, s[1]), None, "already free");
    // Data and teardown need a leaf; finishing them gives it back.
    t.set_data(1, s[1], 9);
    assert_eq!((t.get(1), t.mixed_words()), ((SlotState::Owned(1), 9), 1));
    t.set_data(1, s[1], 0);
    assert_eq!(t.mixed_words(), 0);
    t.begin_teardown(1, s[1], 2);
    assert_eq!(t.get(1), (SlotState::Freeing(2), 0));
    assert!(!t.finish_one(1));
    assert!(t.finish_one(1));
    assert_eq!((t.get(1), t.mixed_words()), ((SlotState::Free, 0), 0));
    assert_eq!(t.taken.word(0), pack(TAG_NONE, t.taken.fixed(0)));
    // Exact claims (a delegated backend) follow the same rules.
    assert!(t.alloc_exact(40, s[3], 0) && !t.alloc_exact(40, s[4], 0));
    assert!(t.alloc_exact(41, s[4], 0));
    assert_eq!(
        (t.get(40).0, t.get(41).0),
        (SlotState::Owned(3), SlotState::Owned(4))
    );
}

#[test]
fn a_tag_read_before_its_set_left_never_names_the_next_holder() {
    let t = OwnerTable::new(1 << 12);
    let a = t.owner_for(1);
    assert!(t.alloc_exact(1, a, 0));
    // A reader's first read of the word, while the tag stands for set 1.
    let seen = t.taken.word(0);
    assert_eq!(t.resolve(0, seen), Some(1));
    // Set 1 leaves; its tag goes to set 3, which takes PASID 2 under it.
    assert!(!t.free_one(1, a));
    t.retire_tag(a);
    let c = t.owner_for(3);
    assert_eq!(c.tag, a.tag, "the lowest free tag comes back");
    assert!(t.alloc_exact(2, c, 0));
    assert_eq!(t.resolve(0, seen), None, "the word changed since");
    assert_eq!(
        (t.get(1).0, t.get(2).0),
        (SlotState::Free, SlotState::Owned(3))
    );
    // Once the word holds that value again, now set 3's, the tag is read as set 3.
    assert!(t.alloc_exact(1, c, 0));
    assert!(t.free_one(2, c));
    assert_eq!(t.taken.word(0), seen);
    assert_eq!(t.resolve(0, seen), Some(3));
    assert_eq!(t.get(1).0, SlotState::Owned(3));
}

#[test]
fn a_set_without_a_tag_keeps_its_pasids_in_mixed_words() {
    let t = OwnerTable::new(1 << 12);
    let tagged: Vec<Owner> = (1..=MAX_TAG).map(|id| t.owner_for(id)).collect();
    let tagless = t.owner_for(1000);
    assert_eq!(tagless.tag, NO_TAG);
    // The lowest free PASIDs, in an empty word: mixed at once, with a leaf.
    assert_eq!(t.alloc(tagless, 1, 4095, 0), Some((1, true)));
    assert_eq!(t.alloc(tagless, 1, 4095, 0), Some((2, true)));
    assert_eq!((tag_of(t.taken.word(0)), t.mixed_words()), (TAG_MIXED, 1));
    assert_eq!(t.get(2).0, SlotState::Owned(1000));
    assert!(t.is_owner(2, tagless) && !t.is_owner(2, tagged[0]));
    // A tagged set's claim in the word records itself in the leaf; nothing collapses to
    // the set without a tag.
    assert_eq!(t.alloc(tagged[0], 1, 4095, 0), Some((3, true)));
    assert_eq!(t.owned_in(0, tagless), 0b110);
    assert_eq!(t.release_tagged(1, tagless.tag), None);
    assert_eq!(t.free_owned(3, tagless), None, "another set's");
    assert_eq!(t.free_owned(1, tagless), Some(true));
    assert!(!t.free(0, 0b100, tagless));
    assert_eq!(t.mixed_words(), 1);
    assert_eq!(t.alloc(tagged[0], 1, 4095, 0), Some((1, true)));
    assert_eq!(
        (tag_of(t.taken.word(0)), t.mixed_words()),
        (tagged[0].tag, 0)
    );
    // Once a tag comes back, the next set gets it.
    t.retire_tag(tagged[5]);
    assert_eq!(t.owner_for(1001).tag, tagged[5].tag);
}
