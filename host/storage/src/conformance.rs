//! The behaviour every storage backend must have, run against each one.
//!
//! A backend crate runs the suite with
//! `weft_storage::storage_conformance_tests!(my_backend, MyStorage::new());`
//! in a test module; it expands to one `#[test]` per property.

/// Generates module `$module` with the conformance tests, each run on a
/// fresh storage made by `$make`.
#[macro_export]
macro_rules! storage_conformance_tests {
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use $crate::{Storage, Tree};

            fn tree() -> std::sync::Arc<dyn Tree> {
                let storage: Box<dyn Storage> = Box::new($make);
                storage.tree("conformance").unwrap()
            }

            #[test]
            fn a_value_read_back_is_the_value_written() {
                let tree = tree();
                assert_eq!(tree.insert(b"k", b"v1").unwrap(), None);
                // Overwriting returns the old value.
                assert_eq!(tree.insert(b"k", b"v2").unwrap(), Some(b"v1".to_vec()));
                assert_eq!(tree.get(b"k").unwrap(), Some(b"v2".to_vec()));
                // Removing returns it and leaves nothing.
                assert_eq!(tree.remove(b"k").unwrap(), Some(b"v2".to_vec()));
                assert_eq!(tree.get(b"k").unwrap(), None);
            }

            #[test]
            fn put_overwrites_and_value_len_is_the_length_of_what_get_reads() {
                let tree = tree();
                assert_eq!(tree.value_len(b"k").unwrap(), None);
                tree.put(b"k", b"a longer first value").unwrap();
                tree.put(b"k", b"second").unwrap();
                assert_eq!(tree.get(b"k").unwrap(), Some(b"second".to_vec()));
                assert_eq!(tree.value_len(b"k").unwrap(), Some(6));
                tree.put(b"k", b"").unwrap();
                assert_eq!(tree.value_len(b"k").unwrap(), Some(0));
            }

            #[test]
            fn compare_and_swap_only_swaps_on_the_expected_value() {
                let tree = tree();
                // Absent → present works when absence is expected.
                assert!(tree.compare_and_swap(b"k", None, Some(b"a")).unwrap());
                // A stale expectation fails and changes nothing.
                assert!(!tree.compare_and_swap(b"k", Some(b"x"), Some(b"b")).unwrap());
                assert_eq!(tree.get(b"k").unwrap(), Some(b"a".to_vec()));
                // Swapping to None deletes.
                assert!(tree.compare_and_swap(b"k", Some(b"a"), None).unwrap());
                assert_eq!(tree.get(b"k").unwrap(), None);
            }

            #[test]
            fn scans_stay_inside_their_prefix_and_page_in_order() {
                let tree = tree();
                for key in ["a/1", "a/2", "a/3", "ab", "b/1"] {
                    tree.insert(key.as_bytes(), b"").unwrap();
                }
                let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| {
                    entries
                        .into_iter()
                        .map(|(k, _)| String::from_utf8(k).unwrap())
                        .collect::<Vec<_>>()
                };
                // Only keys under the prefix, in order.
                assert_eq!(
                    keys(tree.scan(b"a/", None, 10).unwrap()),
                    ["a/1", "a/2", "a/3"]
                );
                // Paging resumes after the last key and honours the limit.
                assert_eq!(keys(tree.scan(b"a/", Some(b"a/1"), 1).unwrap()), ["a/2"]);
                // A cursor before the prefix starts at the prefix.
                assert_eq!(
                    keys(tree.scan(b"a/", Some(b"0"), 10).unwrap()),
                    ["a/1", "a/2", "a/3"]
                );
                // The last entry of a prefix.
                assert_eq!(tree.last_with_prefix(b"a/").unwrap().unwrap().0, b"a/3");
                assert_eq!(tree.last_with_prefix(b"c").unwrap(), None);
            }

            #[test]
            fn for_each_visits_every_entry_of_a_prefix_in_order_across_pages() {
                let tree = tree();
                for n in 0..2500u32 {
                    tree.insert(format!("p/{n:05}").as_bytes(), &n.to_be_bytes())
                        .unwrap();
                }
                tree.insert(b"q/0", b"").unwrap();
                let mut seen = Vec::new();
                tree.for_each(b"p/", &mut |key, _| {
                    seen.push(String::from_utf8(key.to_vec()).unwrap());
                    Ok(())
                })
                .unwrap();
                // All 2500, more than one page, in key order, nothing else.
                assert_eq!(seen.len(), 2500);
                assert!(seen.windows(2).all(|w| w[0] < w[1]));
                assert!(seen.iter().all(|k| k.starts_with("p/")));
            }

            #[test]
            fn removing_a_prefix_leaves_other_keys_alone() {
                let tree = tree();
                for key in ["a/1", "a/2", "ab", "b"] {
                    tree.insert(key.as_bytes(), b"").unwrap();
                }
                assert_eq!(tree.remove_prefix(b"a/").unwrap(), 2);
                assert_eq!(tree.get(b"ab").unwrap(), Some(Vec::new()));
                assert_eq!(tree.get(b"b").unwrap(), Some(Vec::new()));
                assert_eq!(tree.scan(b"a/", None, 10).unwrap(), Vec::new());
            }
        }
    };
}

#[cfg(test)]
mod backends {
    crate::storage_conformance_tests!(memory, crate::MemoryStorage::new());
    crate::storage_conformance_tests!(sled, crate::SledStorage::temporary().unwrap());
}
