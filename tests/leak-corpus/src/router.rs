//! Routes messages to handlers; envelopes come from one pool per type.

use bufpool::TypedPool;

#[derive(Default, Debug)]
pub struct Chat {
    pub room: u32,
    pub text: String,
}

#[derive(Default, Debug)]
pub struct Presence {
    pub user: u64,
    pub online: bool,
}

pub struct Router {
    chats: TypedPool<Chat>,
    presences: TypedPool<Presence>,
    delivered: usize,
    /// Messages to closed rooms, kept "for a retry" that never comes. The
    /// boxes are the pool's envelopes, so they stay boxed.
    #[allow(clippy::vec_box)]
    undeliverable: Vec<Box<Chat>>,
}

impl Router {
    pub fn new() -> Self {
        Self {
            chats: TypedPool::new(),
            presences: TypedPool::new(),
            delivered: 0,
            undeliverable: Vec::new(),
        }
    }

    /// Delivers a chat message to a room.
    pub fn chat(&mut self, room: u32, text: &str) {
        let mut envelope = self.chats.take();
        envelope.room = room;
        envelope.text.push_str(text);
        if envelope.room == 0 {
            // Room 0 is closed: parked for a retry that never happens, and
            // never given back to the pool.
            self.undeliverable.push(envelope);
            return;
        }
        if envelope.text.is_empty() {
            self.chats.give_back(envelope);
            return;
        }
        self.deliver_chat(envelope);
    }

    /// A system notice to every room.
    pub fn announce(&mut self, text: &str) {
        for room in 1..4 {
            let mut envelope = self.chats.take();
            envelope.room = room;
            envelope.text = format!("[notice] {text}");
            self.deliver_chat(envelope);
        }
    }

    /// The same message again, to another room.
    pub fn forward(&mut self, text: &str, to: u32) {
        let mut envelope = self.chats.take();
        envelope.room = to;
        envelope.text.push_str(text);
        self.deliver_chat(envelope);
    }

    fn deliver_chat(&mut self, envelope: Box<Chat>) {
        self.delivered += envelope.text.len();
        self.chats.give_back(envelope);
    }

    pub fn presence(&mut self, user: u64, online: bool) {
        let mut envelope = self.presences.take();
        envelope.user = user;
        envelope.online = online;
        if user == 0 {
            // Nobody: nothing to deliver.
            self.presences.give_back(envelope);
            return;
        }
        self.deliver_presence(envelope);
    }

    /// Everyone in a list goes offline (a server shutting down).
    pub fn all_offline(&mut self, users: &[u64]) {
        for &user in users {
            let mut envelope = self.presences.take();
            envelope.user = user;
            self.deliver_presence(envelope);
        }
    }

    fn deliver_presence(&mut self, envelope: Box<Presence>) {
        self.delivered += usize::from(envelope.online);
        self.presences.give_back(envelope);
    }

    pub fn outstanding(&self) -> usize {
        self.chats.outstanding() + self.presences.outstanding()
    }
}

/// Routes `count` messages of each kind to rooms 0..3: a quarter of the
/// chats go to the closed room and are lost.
pub fn run(count: usize) -> usize {
    let mut router = Router::new();
    for index in 0..count * 4 {
        router.chat((index % 4) as u32, "hello");
        router.presence(index as u64, index % 2 == 0);
        if index % 10 == 0 {
            router.announce("maintenance at noon");
            router.forward("hello again", 2);
            router.all_offline(&[1, 2, 3]);
        }
    }
    router.outstanding()
}
