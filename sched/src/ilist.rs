//! An intrusive FIFO of nodes that live elsewhere (on the stacks of waiting threads), reached only
//! under the lock of the queue that owns it: the list of [`crate::wait::WaitQueue`] and of
//! [`crate::keyed::KeyedWaitQueue`].
//!
//! Key types: [`List`], [`Links`] (the two pointers a node embeds) and [`Node`] (how the list
//! finds them).
//!
//! The list allocates nothing and owns nothing: a node is valid while linked because its waiter
//! does not leave its wait (and so its frame) before it is unlinked, under the same lock.

use core::ptr::null_mut;

/// A node's place in a [`List`].
pub(crate) struct Links<N> {
    pub(crate) prev: *mut N,
    pub(crate) next: *mut N,
}

impl<N> Links<N> {
    /// Not linked anywhere yet.
    pub(crate) const fn new() -> Self {
        Links {
            prev: null_mut(),
            next: null_mut(),
        }
    }
}

/// A node type that embeds its [`Links`].
pub(crate) trait Node: Sized {
    /// The links of node `n`.
    ///
    /// # Safety
    /// `n` points to a valid node.
    unsafe fn links(n: *mut Self) -> *mut Links<Self>;
}

/// FIFO of nodes linked through their [`Links`].
pub(crate) struct List<N> {
    pub(crate) head: *mut N,
    tail: *mut N,
}

// SAFETY: the nodes belong to waiters that stay inside their wait while linked, and the list is
// reached only under its owner's lock, from whatever CPU holds it.
unsafe impl<N> Send for List<N> {}

impl<N: Node> List<N> {
    pub(crate) const fn new() -> Self {
        List {
            head: null_mut(),
            tail: null_mut(),
        }
    }

    /// The node after `n` (null at the end).
    ///
    /// # Safety
    /// `n` is linked in a list.
    #[inline(always)]
    pub(crate) unsafe fn next(n: *mut N) -> *mut N {
        // SAFETY: a linked node is valid (caller).
        unsafe { (*N::links(n)).next }
    }

    /// # Safety
    /// `n` is valid and not linked; it stays valid until unlinked (under the lock).
    #[inline(always)]
    pub(crate) unsafe fn push_back(&mut self, n: *mut N) {
        // SAFETY: `n` and the current tail are valid nodes (caller; linked nodes stay valid).
        unsafe {
            let links = N::links(n);
            (*links).prev = self.tail;
            (*links).next = null_mut();
            match self.tail.is_null() {
                true => self.head = n,
                false => (*N::links(self.tail)).next = n,
            }
        }
        self.tail = n;
    }

    /// # Safety
    /// `n` is linked in this list.
    #[inline(always)]
    pub(crate) unsafe fn unlink(&mut self, n: *mut N) {
        // SAFETY: `n` and its neighbours are linked, hence valid.
        unsafe {
            let Links { prev, next } = *N::links(n);
            match prev.is_null() {
                true => self.head = next,
                false => (*N::links(prev)).next = next,
            }
            match next.is_null() {
                true => self.tail = prev,
                false => (*N::links(next)).prev = prev,
            }
        }
    }

    /// Unlink and return the first node, if any.
    #[inline(always)]
    pub(crate) fn pop_front(&mut self) -> Option<*mut N> {
        let n = self.head;
        if n.is_null() {
            return None;
        }
        // SAFETY: the head is linked.
        unsafe { self.unlink(n) };
        Some(n)
    }
}
