//! The scopes the RPC table names, and a principal's set of them.

use std::fmt;

macro_rules! scopes {
    ($($(#[doc = $doc:literal])+ $variant:ident = $name:literal,)+) => {
        /// A right to call a group of RPCs (`crate::rpcs::RPCS` says which
        /// scope each needs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Scope {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl Scope {
            /// Every scope.
            pub const ALL: &[Scope] = &[$(Scope::$variant,)+];

            /// The scope's name in credentials files and JWT `scope` claims.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Scope::$variant => $name,)+
                }
            }

            /// The scope named `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Scope::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

scopes! {
    /// GetOrder, ListOrders.
    OrdersRead = "orders:read",
    /// CreateOrder, UpdateOrderStatus.
    OrdersWrite = "orders:write",
    /// GetProduct, GetPrimaryWarehouse.
    CatalogRead = "catalog:read",
    /// UpsertProduct.
    CatalogWrite = "catalog:write",
    /// PublishEvent, PublishEvents, PublishEventBatch, StreamEventBatches.
    EventsPublish = "events:publish",
    /// SubscribeEvents, GetPipelineStats.
    EventsRead = "events:read",
}

impl Scope {
    /// Whether the RPCs needing it change state: each such call writes an
    /// audit line (`crate::audit`).
    pub const fn mutates(self) -> bool {
        matches!(
            self,
            Scope::OrdersWrite | Scope::CatalogWrite | Scope::EventsPublish
        )
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope.
    pub fn all() -> Self {
        Scope::ALL.iter().copied().collect()
    }

    /// Whether `scope` is in the set.
    pub const fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The scopes of a JWT's space-separated `scope` claim. Names this
    /// server does not know are ignored: a token may carry scopes for other
    /// services.
    pub fn from_claim(claim: &str) -> Self {
        claim
            .split_ascii_whitespace()
            .filter_map(Scope::from_name)
            .collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(scopes: I) -> Self {
        Self(scopes.into_iter().fold(0, |set, scope| set | scope.bit()))
    }
}

#[cfg(test)]
mod tests {
    use super::{Scope, Scopes};

    #[test]
    fn names_round_trip_and_sets_hold_what_was_put_in() {
        for &scope in Scope::ALL {
            assert_eq!(Scope::from_name(scope.as_str()), Some(scope));
        }
        let set = Scopes::from_claim("orders:read  openid events:publish");
        assert!(set.contains(Scope::OrdersRead));
        assert!(set.contains(Scope::EventsPublish));
        assert!(!set.contains(Scope::OrdersWrite));
        assert!(Scope::ALL.iter().all(|&s| Scopes::all().contains(s)));
        assert!(Scope::ALL.iter().all(|&s| !Scopes::default().contains(s)));
    }
}
