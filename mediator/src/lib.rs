//! p2pchat rendezvous server (placeholder until the mediator lands).
